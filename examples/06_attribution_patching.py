"""Attribution patching: a linear estimate of every position's patching effect, from one backward.

(clean - corrupt) * d(metric)/d(activation), summed over the hidden dimension.

    python examples/06_attribution_patching.py [CHECKPOINT]
"""

import sys

import mlxsight  # before mlx: loads OpenBLAS first when MLXSIGHT_OPENBLAS is set (Linux)
import mlx.core as mx
from mlxsight import assets

model = mlxsight.LanguageModel(sys.argv[1] if len(sys.argv) > 1 else assets.path("stories260k"))
tok = model.tokenizer
clean = "Once upon a time, there was a little girl named Lily. She was very happy. One day,"
corrupt = clean.replace("Lily", "Tim")
lily, tim = tok.convert_tokens_to_ids("▁Lily"), tok.convert_tokens_to_ids("▁Tim")
layer = 1

with model.trace(clean):
    clean_h = model.model.layers[layer].output.save()
with model.trace(corrupt):
    h = model.model.layers[layer].output
    logits = model.output.logits
    metric = logits[0, -1, lily] - logits[0, -1, tim]
    with metric.backward():
        attribution = (-(h - clean_h) * h.grad).sum(axis=-1).save()

tokens = tok.convert_ids_to_tokens(tok(corrupt)["input_ids"])
best = int(mx.argmax(mx.abs(attribution[0])))
print(f"layer {layer}: largest estimated effect at position {best} ({tokens[best]!r}): {float(attribution[0, best]):.2f}")
for i, (t, a) in enumerate(zip(tokens, attribution[0].tolist())):
    print(f"  {i:2d} {t!r:>12} {a:7.3f}")
