"""Steering: add a vector to the residual stream at every generated token.

    python examples/03_steering.py [CHECKPOINT]
"""

import sys

import mlxsight
from mlxsight import assets

model = mlxsight.LanguageModel(sys.argv[1] if len(sys.argv) > 1 else assets.path("stories260k"))
tok = model.tokenizer
vector = model.model.embed_tokens.weight[tok.convert_tokens_to_ids("▁happy")] * 1.5

plain = model.generate("Once upon a time", max_new_tokens=24)
with model.generate("Once upon a time", max_new_tokens=24) as tracer:
    for step in tracer.iter[:24]:
        model.model.layers[3].output[:, -1] += vector
    steered = tracer.result.save()

print("plain:  ", tok.decode(plain[0].tolist(), skip_special_tokens=True))
print("steered:", tok.decode(steered[0].tolist(), skip_special_tokens=True))
