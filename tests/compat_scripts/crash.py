"""Fails on purpose after a trace, so crosscheck must report the traceback and fail."""
import sys

import nnsight
from nnsight import LanguageModel
from transformers import AutoTokenizer

model = LanguageModel(sys.argv[1], tokenizer=AutoTokenizer.from_pretrained(sys.argv[1]))
with model.trace("The cat"):
    logits = nnsight.save(model.lm_head.output)
raise RuntimeError("deliberate failure after the trace")
