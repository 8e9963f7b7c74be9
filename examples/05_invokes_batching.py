"""Several prompts in one forward pass, each invoke seeing only its own rows.

    python examples/05_invokes_batching.py [CHECKPOINT]
"""

import sys

import mlxsight  # before mlx: loads OpenBLAS first when MLXSIGHT_OPENBLAS is set (Linux)
import mlx.core as mx
from mlxsight import assets

model = mlxsight.LanguageModel(sys.argv[1] if len(sys.argv) > 1 else assets.path("stories260k"))
prompts = ["Once upon a time", "The little dog ran to the park and"]

results = []
with model.trace() as tracer:
    for p in prompts:
        with tracer.invoke(p):
            results.append(model.lm_head.output[:, -1].argmax(axis=-1))
    with tracer.invoke():  # no input: the whole batch
        batch_shape = mlxsight.save(model.model.layers[0].output.shape)

print(f"one forward over a padded batch of shape {batch_shape}")
for p, r in zip(prompts, results):
    with model.trace(p):
        solo = model.lm_head.output[:, -1].argmax(axis=-1).save()
    same = bool(mx.array_equal(r, solo))
    print(f"{p!r} -> {model.tokenizer.decode(r.tolist())!r} (same as alone: {same})")
