"""tools.attention_patterns: every head's attention weights, recomputed exactly from the model's
own queries and keys (MLX's fused attention never materialises them).

    python examples/tools_attention.py [CHECKPOINT]
"""

import sys

import mlxsight  # before mlx: loads OpenBLAS first when MLXSIGHT_OPENBLAS is set (Linux)
import numpy as np
from mlxsight import assets, tools

model = mlxsight.LanguageModel(sys.argv[1] if len(sys.argv) > 1 else assets.path("stories260k"))
prompt = "Once upon a time, there was a little girl named Lily. She loved to play"

patterns = tools.attention_patterns(model, prompt)
weights = np.asarray(patterns)  # [layers, heads, T, T]
print(f"attention weights: {weights.shape} (layers, heads, query, key); rows sum to 1: "
      f"{np.allclose(weights.sum(-1), 1, atol=1e-5)}")
last = len(patterns.tokens) - 1
for layer in patterns.layers:
    head = int(np.argmax(weights[layer, :, last, :-1].max(-1)))
    key = int(np.argmax(weights[layer, head, last]))
    print(f"layer {layer}: head {head} sends {weights[layer, head, last, key]:.2f} of the last token's "
          f"attention to {patterns.tokens[key]!r} (position {key})")
