"""Logit lens: decode every layer's residual through the final norm and the unembedding."""
import sys

import torch
import nnsight
from nnsight import LanguageModel
from transformers import AutoTokenizer

# a local checkpoint needs its tokenizer passed in (nnsight cannot infer the task offline)
model = LanguageModel(sys.argv[1], tokenizer=AutoTokenizer.from_pretrained(sys.argv[1]))

with model.trace("Yesterday, Tom found a shiny coin"):
    # the list is built inside the trace, so the list itself is what gets saved
    lens = nnsight.save([model.lm_head(model.model.norm(layer.output)) for layer in model.model.layers])

probs = [torch.softmax(l[0, -1].float(), dim=-1) for l in lens]
print("layer-wise top tokens:", [int(p.argmax()) for p in probs])
