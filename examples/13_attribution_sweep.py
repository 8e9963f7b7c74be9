"""Attribution patching in one call: the whole layers x positions grid from one backward pass,
next to activation patching's exact grid.

    python examples/13_attribution_sweep.py [CHECKPOINT]
"""

import sys

import mlxsight  # before mlx: loads OpenBLAS first when MLXSIGHT_OPENBLAS is set (Linux)
from mlxsight import assets, tools

model = mlxsight.LanguageModel(sys.argv[1] if len(sys.argv) > 1 else assets.path("stories260k"))
tok = model.tokenizer
clean = "Once upon a time, there was a little girl named Lily. She was very happy. One day,"
corrupt = clean.replace("Lily", "Tim")
metric = tools.logit_diff(tok.convert_tokens_to_ids("▁Lily"), tok.convert_tokens_to_ids("▁Tim"))

for component in ("resid", "attn", "mlp"):
    estimate = tools.attribution_patching(model, clean, corrupt, metric, component=component, compare=True,
                                          progress=False)
    print(f"{component:<5} correlation with activation patching: {estimate.correlation:.3f}")

estimate = tools.attribution_patching(model, clean, corrupt, metric, positions=[14], progress=False)
print("estimated recovery when patching the name's residual, layers 0-4:",
      " ".join(f"{100 * r:.0f}%" for r in estimate.normalized[:, 0]))
