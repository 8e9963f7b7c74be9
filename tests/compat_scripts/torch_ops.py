"""torch functions and torch-keyword tensor methods on values inside the trace."""
import sys

import torch
from nnsight import LanguageModel
from transformers import AutoTokenizer

model = LanguageModel(sys.argv[1], tokenizer=AutoTokenizer.from_pretrained(sys.argv[1]))

with model.trace("Once upon a time, Lily saw a red ball"):
    norms = model.model.layers[2].output.norm(dim=-1).save()
    logits = model.lm_head.output
    probs = torch.softmax(logits[0, -1], dim=-1).save()
    top = logits.argmax(dim=-1).save()

print(top.tolist())
