"""Activation patching: which layers carry the name 'Lily' to the final prediction?

Runs the clean and the corrupted prompt as two invokes of one forward per layer, and copies the
clean residual at the name position into the corrupted run.

    python examples/02_activation_patching.py [CHECKPOINT]
"""

import sys

import mlxsight
from mlxsight import assets

model = mlxsight.LanguageModel(sys.argv[1] if len(sys.argv) > 1 else assets.path("stories260k"))
tok = model.tokenizer
clean = "Once upon a time, there was a little girl named Lily. She was very happy. One day,"
corrupt = clean.replace("Lily", "Tim")
pos = next(i for i, (a, b) in enumerate(zip(tok(clean)["input_ids"], tok(corrupt)["input_ids"])) if a != b)
lily, tim = tok.convert_tokens_to_ids("▁Lily"), tok.convert_tokens_to_ids("▁Tim")


def logit_diff():
    logits = model.output.logits
    return logits[0, -1, lily] - logits[0, -1, tim]


with model.trace() as tracer:
    with tracer.invoke(clean):
        clean_diff = logit_diff().save()
    with tracer.invoke(corrupt):
        corrupt_diff = logit_diff().save()
clean_diff, corrupt_diff = float(clean_diff), float(corrupt_diff)
print(f"logit diff (Lily - Tim): clean {clean_diff:.2f}, corrupted {corrupt_diff:.2f}")

for layer in range(len(model.model.layers)):
    with model.trace() as tracer:
        with tracer.invoke(clean):
            h = model.model.layers[layer].input[:, pos]
        with tracer.invoke(corrupt):
            x = model.model.layers[layer].input  # ask for the layer first: the clean body binds h there
            x[:, pos] = h
            patched = logit_diff().save()
    recovered = (float(patched) - corrupt_diff) / (clean_diff - corrupt_diff)
    print(f"patch residual into layer {layer} at position {pos}: recovered {100 * recovered:5.1f}%")
