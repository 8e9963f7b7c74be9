"""Steer with a vector added to one layer (remote=True when asked: `steer_remote.py CKPT remote`)."""
import sys

from nnsight import LanguageModel
from transformers import AutoTokenizer

# a local checkpoint needs its tokenizer passed in (nnsight cannot infer the task offline)
model = LanguageModel(sys.argv[1], tokenizer=AutoTokenizer.from_pretrained(sys.argv[1]))
remote = len(sys.argv) > 2 and sys.argv[2] == "remote"

with model.trace("After lunch, Mia opened the blue door", remote=remote):
    model.model.layers[1].output[:, -1, :] += 0.5
    out = model.lm_head.output.save()

print("steered logits norm:", float(out.norm()))
