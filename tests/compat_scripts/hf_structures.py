"""Reads transformers-shaped structures: the root ModelOutput, attention's (out, weights) tuple."""
import sys

import nnsight
from nnsight import LanguageModel
from transformers import AutoTokenizer

model = LanguageModel(sys.argv[1], tokenizer=AutoTokenizer.from_pretrained(sys.argv[1]))

with model.trace(["The cat sat", "The dog sat"]):  # same length: no padding
    attn_out = model.model.layers[0].self_attn.output[0].save()
    shape = nnsight.save(model.model.layers[1].output.shape)
    out = model.output.save()

print(tuple(out.logits.shape), tuple(attn_out.shape), tuple(shape))
