"""A custom envoy's eproperty with a transform: a view read once per step (``heads is heads``), and
in-place edits of the view written back into the module's output (nnsight 0.8.1's TestCustomEnvoys)."""
import sys

import nnsight
from nnsight.intervention.envoy import Envoy
from nnsight.intervention.eproperty import eproperty
from nnsight.modeling.transformers import TransformersModel
from transformers import AutoTokenizer


class Heads(Envoy):
    n_heads = 2

    @eproperty(key="output")
    def heads(self, value):
        b, s, h = value.shape
        return value.view(b, s, self.n_heads, h // self.n_heads).transpose(1, 2)

    @heads.transform
    def heads(self, value, raw):
        b, nh, s, hd = value.shape
        return value.transpose(1, 2).reshape(b, s, nh * hd)


class InHeads(Envoy):
    """nnsight's docs/patterns/per-head-attention.md: key="input" serves the raw (args, kwargs)."""
    n_heads = 2

    @eproperty(key="input")
    def heads(self, value):
        (x,), _ = value
        b, s, d = x.shape
        return x.view(b, s, self.n_heads, d // self.n_heads)

    @heads.transform
    def heads(self, value, raw):
        b, s, n, head_dim = value.shape
        return ((value.reshape(b, s, n * head_dim),), {})


path = sys.argv[1]
model = TransformersModel(path, task="text-generation", tokenizer=AutoTokenizer.from_pretrained(path),
                          envoys={"layers.0.mlp": Heads, "layers.1.mlp.down_proj": InHeads})
mlp = model.model.layers[0].mlp
with model.trace("Once upon a time"):
    base = model.output.logits.save()
with model.trace("Once upon a time"):
    first = mlp.heads
    same = nnsight.save(mlp.heads is first)
    first[:, 1] *= 2
    once = model.output.logits.save()
with model.trace("Once upon a time"):
    mlp.heads[:, 1] += mlp.heads[:, 1]
    twice = model.output.logits.save()
with model.trace("Once upon a time"):
    mlp.heads[:, 0] = 0
    zeroed_out = mlp.output.save()
with model.trace("Once upon a time"):
    model.model.layers[1].mlp.down_proj.heads[:, :, 1, :] = 0
    zeroed_in = model.model.layers[1].mlp.down_proj.input.save()
assert bool((zeroed_in[..., zeroed_in.shape[-1] // 2:] == 0).all())
assert bool(same) and not bool((once == base).all()) and bool((once == twice).all())
assert bool((zeroed_out[..., : zeroed_out.shape[-1] // 2] == 0).all())
