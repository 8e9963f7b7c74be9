"""Caching every module's output, and reading operations inside a module's forward with .source.

    python examples/07_cache_and_source.py [CHECKPOINT]
"""

import sys

import mlxsight  # before mlx: loads OpenBLAS first when MLXSIGHT_OPENBLAS is set (Linux)
import mlx.core as mx
from mlxsight import assets

model = mlxsight.LanguageModel(sys.argv[1] if len(sys.argv) > 1 else assets.path("stories260k"), view="mlx")
prompt = "Once upon a time, there was a little girl named Lily."

with model.trace(prompt) as tracer:
    cache = tracer.cache(modules=[layer for layer in model.model.layers])
    attn = model.model.layers[0].self_attn
    weights = mlxsight.attention.weights(attn.source.self_rope_2.output, attn.source.self_rope_3.output,
                                         scale=attn.scale).save()
    gate = model.model.layers[0].mlp.source.self_gate_proj_0.output.save()

print("cached:", ", ".join(f"{k} {tuple(v.output.shape)}" for k, v in cache.items()))
print(model.model.layers[0].mlp.source)
print(f"MLP gate activations: {tuple(gate.shape)}")
print(f"layer 0 attention weights (recomputed from q and k): {tuple(weights.shape)}; "
      f"head 0 attends from the last token mostly to position {int(mx.argmax(weights[0, 0, -1]))}")
