"""Save the residual stream after every layer, the final norm and the logits."""
import sys

import nnsight
from nnsight import LanguageModel
from transformers import AutoTokenizer

# a local checkpoint needs its tokenizer passed in (nnsight cannot infer the task offline)
model = LanguageModel(sys.argv[1], tokenizer=AutoTokenizer.from_pretrained(sys.argv[1]))
prompt = "Once upon a time, Lily saw a red ball"

with model.trace(prompt):
    hidden = nnsight.save([model.model.layers[i].output for i in range(len(model.model.layers))])
    normed = model.model.norm.output.save()
    logits = model.lm_head.output.save()

print("top next token:", model.tokenizer.decode(logits[0, -1].argmax()))
