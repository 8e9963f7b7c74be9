"""A patching sweep in one call: where does the name 'Lily' live, layer by layer and token by token?

tools.activation_patching patches the clean residual stream into the corrupted run at every
(layer, position) cell and returns the metric of each patched run.

    python examples/12_patching_sweep.py [CHECKPOINT]
"""

import sys

import mlxsight  # before mlx: loads OpenBLAS first when MLXSIGHT_OPENBLAS is set (Linux)
from mlxsight import assets, tools

model = mlxsight.LanguageModel(sys.argv[1] if len(sys.argv) > 1 else assets.path("stories260k"))
tok = model.tokenizer
clean = "Once upon a time, there was a little girl named Lily. She was very happy. One day,"
corrupt = clean.replace("Lily", "Tim")
metric = tools.logit_diff(tok.convert_tokens_to_ids("▁Lily"), tok.convert_tokens_to_ids("▁Tim"))

result = tools.activation_patching(model, clean, corrupt, metric, progress=False)
print(result)
print(f"logit diff clean {result.clean:.2f}, corrupted {result.corrupted:.2f}")
recovered = result.normalized  # (scores - corrupted) / (clean - corrupted)
for i, layer in enumerate(result.layers):
    best = int(recovered[i].argmax())
    print(f"layer {layer}: most recovered at position {best} ({result.tokens[best]!r}): {100 * recovered[i, best]:.0f}%")

heads = tools.activation_patching(model, clean, corrupt, metric, component="heads", progress=False)
layer, head = divmod(int(heads.normalized.argmax()), heads.scores.shape[1])
print(f"heads (all positions at once): layer {layer} head {head} recovers {100 * heads.normalized.max():.0f}%")
