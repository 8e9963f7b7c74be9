"""tools.head_scores: previous-token, duplicate-token, induction and first-token heads.

    python examples/tools_heads.py [CHECKPOINT]

The bundled stories260k has clear previous-token heads but only weak induction; SmolLM2-135M
(`python -m mlxsight.assets.build_smollm2`, then pass its directory) has strong induction heads.
"""

import sys

import mlxsight  # before mlx: loads OpenBLAS first when MLXSIGHT_OPENBLAS is set (Linux)
from mlxsight import assets, tools

model = mlxsight.LanguageModel(sys.argv[1] if len(sys.argv) > 1 else assets.path("stories260k"))
for kind in ("previous_token", "duplicate_token", "induction", "first_token"):
    scores = tools.head_scores(model, kind, seq_len=32, batch=4)
    top = ", ".join(f"{layer}.{head} {score:.2f}" for layer, head, score in scores.top(3))
    print(f"{kind:<16} top heads (layer.head score): {top}")
