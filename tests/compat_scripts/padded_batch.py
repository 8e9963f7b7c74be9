"""Two prompts of different lengths in one batch: left padding, attention mask, position ids."""
import sys

import nnsight
from nnsight import LanguageModel
from transformers import AutoTokenizer

model = LanguageModel(sys.argv[1], tokenizer=AutoTokenizer.from_pretrained(sys.argv[1]))

with model.trace(["Once upon a time, the cat sat", "A dog"]):
    last_h = model.model.layers[3].output[:, -1, :].save()
    logits = model.lm_head.output
    last = nnsight.save(logits[:, -1, :])
    full = nnsight.save(logits)

print(tuple(full.shape))
