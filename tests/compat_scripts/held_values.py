"""Values a script holds outside the names a trace rebinds: lists built before the trace, a list
saved with ``.save()`` and filled per generation step, cache entries, a custom envoy's eproperty,
and generate() called without a block. On nnsight all of them are torch tensors."""
import sys

import torch
from nnsight.intervention.envoy import Envoy
from nnsight.intervention.eproperty import eproperty
from nnsight.modeling.transformers import TransformersModel
from transformers import AutoTokenizer


class Heads(Envoy):
    """A per-head view of the attention output projection's output."""

    @eproperty(key="output")
    def heads(self, value):
        b, s, h = value.shape
        return value.view(b, s, 4, h // 4).transpose(1, 2)


path = sys.argv[1]
model = TransformersModel(path, task="text-generation", tokenizer=AutoTokenizer.from_pretrained(path),
                          envoys={"o_proj": Heads})
assert isinstance(model.model.layers[0].self_attn.o_proj, Heads)

layers = []
with model.trace("Yesterday, Tom found a shiny coin") as tracer:
    cache = tracer.cache(modules=[model.model.layers[1]])
    heads = model.model.layers[0].self_attn.o_proj.heads.save()
    for layer in model.model.layers[:2]:
        layers.append(layer.output.save())
stacked = torch.cat(layers)  # fails unless the list holds torch tensors
cached = cache["model.model.layers.1"].output
assert isinstance(cached, torch.Tensor) and isinstance(heads, torch.Tensor)

with model.generate("Once upon a time", max_new_tokens=3) as tracer:
    steps = list().save()
    for step in tracer.iter[:3]:
        steps.append(model.lm_head.output[0, -1].argmax(dim=-1))
ids = model.generate("Once upon a time", max_new_tokens=3)
assert isinstance(ids, torch.Tensor) and all(isinstance(s, torch.Tensor) for s in steps)
print("stacked", tuple(stacked.shape), "heads", tuple(heads.shape), "steps", [int(s) for s in steps])
