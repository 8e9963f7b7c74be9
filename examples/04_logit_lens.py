"""Logit lens: decode the residual stream after each layer with the final norm and unembedding.

    python examples/04_logit_lens.py [CHECKPOINT]
"""

import sys

import mlxsight  # before mlx: loads OpenBLAS first when MLXSIGHT_OPENBLAS is set (Linux)
import mlx.core as mx
from mlxsight import assets

model = mlxsight.LanguageModel(sys.argv[1] if len(sys.argv) > 1 else assets.path("stories260k"))
tok = model.tokenizer
prompt = "Once upon a time, there was a little girl named Lily. She loved to play"

with model.trace(prompt):
    probs = mlxsight.save([
        mlxsight.apply(mx.softmax, model.lm_head(model.model.norm(layer.output))[0, -1], axis=-1)
        for layer in model.model.layers
    ])

print(f"prompt: {prompt!r}")
for i, p in enumerate(probs):
    top = mx.argsort(-p)[:3].tolist()
    guesses = ", ".join(f"{tok.decode([t])!r} {float(p[t]):.2f}" for t in top)
    print(f"after layer {i}: {guesses}")
