"""Which names a block leaves behind: nnsight's outermost block (a trace, or a session around
traces) pushes only saved values; an inner trace of a session pushes everything to the session's
body. Prints, after each block, which of its names exist.

    python pushed_names.py CHECKPOINT
"""
import sys

from transformers import AutoTokenizer

import nnsight
from nnsight import LanguageModel

path = sys.argv[1]
model = LanguageModel(path, tokenizer=AutoTokenizer.from_pretrained(path))
existing = "before"

with model.trace("Once upon a time"):
    n_heads = model.config.num_attention_heads          # a plain value, unsaved
    for i, layer in enumerate(model.model.layers[:2]):  # loop variables
        last = layer.output.save()
    existing = "rebound in the block"
    shape = nnsight.save(list(last.shape))
print("trace:", {name: name in globals() for name in ("n_heads", "i", "layer", "last", "shape")}, existing)

with model.session():
    with model.trace("Once upon a time"):
        h = model.model.layers[1].output
        k = 3
    inner = {name: name in globals() for name in ("h", "k")}   # the inner trace pushed both
    with model.trace("The big dog"):
        model.model.layers[1].output[:, -1] = h[:, -1] * k
        out = model.lm_head.output.save()
    note = "made in the session body"
    seen = nnsight.save(inner)
print("session:", seen, {name: name in globals() for name in ("out", "k", "note", "h")})
