"""What one invoke body sees of a name another binds: nnsight runs the bodies as workers interleaved
in forward order, so a sibling's name exists only once the forward has reached where it was bound.

Each case prints its outcome (the values it saves, or the class of what it raised): both backends
must print the same lines and save the same values."""
import sys

from nnsight import LanguageModel
from transformers import AutoTokenizer

model = LanguageModel(sys.argv[1], tokenizer=AutoTokenizer.from_pretrained(sys.argv[1]))
clean, corrupt = "The cat sat on the mat", "The dog ran in the park"
layers = model.model.layers
outcomes = []

for case in ("right-hand side first", "layer asked for first", "same layer", "earlier layer", "barrier",
             "loop of reads", "appends in forward order"):
    order = []
    for name in ("h", "hs"):  # each case starts without the names an earlier case saved
        globals().pop(name, None)
    try:
        with model.trace() as tracer:
            barrier = tracer.barrier(2)
            with tracer.invoke(clean):
                if case == "loop of reads":
                    hs = [layers[i].output[:, -1, :] for i in range(3)]  # bound once layer 2 is reached
                else:
                    h = layers[1].output[:, -1, :].save()
                order.append("clean 1")
                if case == "barrier":
                    barrier()
                order.append("clean end")
                clean_logits = model.lm_head.output[:, -1].save()
            with tracer.invoke(corrupt):
                order.append("corrupt start")
                if case == "right-hand side first":
                    layers[3].output[:, -1, :] = h
                elif case == "layer asked for first":
                    out = layers[3].output
                    out[:, -1, :] = h
                elif case == "same layer":
                    out = layers[1].output
                    out[:, -1, :] = h
                elif case == "earlier layer":
                    out = layers[0].output
                    out[:, -1, :] = h
                elif case == "barrier":
                    barrier()
                    layers[1].output[:, -1, :] = h
                elif case == "loop of reads":
                    out = layers[1].output
                    out[:, -1, :] = hs[0]
                else:
                    out = layers[0].output
                    order.append("corrupt 0")
                    out = layers[2].output
                    order.append("corrupt 2")
                patched = model.lm_head.output[:, -1].save()
        outcomes.append(f"{case}: ran, order {order}")
    except Exception as e:  # noqa: BLE001 - the class is the outcome compared
        outcomes.append(f"{case}: {type(e).__name__}, order {order}")

for line in outcomes:
    print(line)
