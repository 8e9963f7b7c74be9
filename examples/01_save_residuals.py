"""Save the residual stream after every layer, in one forward pass.

    python examples/01_save_residuals.py [CHECKPOINT]
"""

import sys

import mlxsight  # before mlx: loads OpenBLAS first when MLXSIGHT_OPENBLAS is set (Linux)
import mlx.core as mx
from mlxsight import assets

model = mlxsight.LanguageModel(sys.argv[1] if len(sys.argv) > 1 else assets.path("stories260k"))
prompt = "Once upon a time, there was a little girl named Lily."

with model.trace(prompt) as tracer:
    residuals = mlxsight.save([layer.output for layer in model.model.layers])
    logits = model.lm_head.output.save()

print(tracer.graph)
for i, h in enumerate(residuals):
    print(f"layer {i}: shape {tuple(h.shape)}, mean norm per token {float(mx.linalg.norm(h[0], axis=-1).mean()):.3f}")
next_token = model.tokenizer.decode([int(logits[0, -1].argmax())])
print(f"next token: {next_token!r}")
