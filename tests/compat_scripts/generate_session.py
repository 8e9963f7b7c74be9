"""Greedy generation with per-step logits, then a session of two traces."""
import sys

import nnsight
from nnsight import LanguageModel
from transformers import AutoTokenizer

model = LanguageModel(sys.argv[1], tokenizer=AutoTokenizer.from_pretrained(sys.argv[1]))

with model.generate("Once upon a time", max_new_tokens=3, do_sample=False) as tracer:
    steps = nnsight.save(list())
    for step in tracer.iter[:]:
        steps.append(model.lm_head.output[:, -1])

with model.session() as session:
    with model.trace("The cat"):
        a = model.model.layers[0].output.save()
    with model.trace("The dog"):
        b = model.model.layers[0].output.save()

print(len(steps), tuple(a.shape), tuple(b.shape))
