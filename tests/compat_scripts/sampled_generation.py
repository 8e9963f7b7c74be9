"""Seeded sampled generation: the same token ids on nnsight and on mlxsight under compat, for
transformers' default warpers (top-k 50), temperature with top-k and top-p, every token (top_k=0),
several returned sequences of a batch, and a traced generate whose tokens a later step reads."""
import sys

import torch
from nnsight import LanguageModel
from transformers import AutoTokenizer

path = sys.argv[1]
model = LanguageModel(path, tokenizer=AutoTokenizer.from_pretrained(path))
PROMPT = "Once upon a time"

settings = [dict(), dict(temperature=0.7, top_k=5), dict(temperature=1.3, top_k=0, top_p=0.9),
            dict(top_k=0)]
sampled = {}
for seed in (0, 1, 2):
    for i, kw in enumerate(settings):
        torch.manual_seed(seed)
        sampled[f"seed{seed}_setting{i}"] = model.generate(PROMPT, max_new_tokens=8, do_sample=True, **kw)

torch.manual_seed(3)
batch = model.generate(["Hello, world!", "The quick brown fox"], max_new_tokens=5, do_sample=True,
                       num_return_sequences=2, temperature=0.8)

torch.manual_seed(4)
with model.generate(PROMPT, max_new_tokens=6, do_sample=True, top_p=0.8) as tracer:
    traced = tracer.result.save()
after = torch.rand(3)  # the stream is where transformers left it
print({k: v[0, -8:].tolist() for k, v in sampled.items()})
print(batch.tolist(), traced.tolist(), after.tolist())
