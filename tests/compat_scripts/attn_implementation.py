"""Attention weights under attn_implementation="eager", none under "sdpa", switched as NDIF's server
switches a shared model (`_remoteable_set_env`), on a left-padded batch."""
import sys

from nnsight.modeling.transformers import TransformersModel
from transformers import AutoTokenizer

path = sys.argv[1]
model = TransformersModel(path, task="text-generation", attn_implementation="eager",
                          tokenizer=AutoTokenizer.from_pretrained(path))
assert model._remoteable_get_env() == {"attn_implementation": "eager"}
assert model._module.config._attn_implementation == "eager"
prompts = ["The cat saw a red ball in the park and the dog found it.", "Hello, world!"]
with model.trace(prompts):
    first = model.model.layers[0].self_attn.output
    weights_0 = first[1].save()
    attn_out_0 = first[0].save()
    weights_3 = model.model.layers[3].self_attn.output[1].save()
    logits_eager = model.output.logits.save()

model._remoteable_set_env({"attn_implementation": "sdpa"})
model._remoteable_set_env({})  # an older client: left as it is
assert model.attn_implementation == "sdpa"
with model.trace(prompts):
    none_under_sdpa = model.model.layers[0].self_attn.output[1].save()
    logits_sdpa = model.output.logits.save()

try:
    model._remoteable_set_env({"attn_implementation": "bogus"})
except ValueError as error:
    assert "bogus" in str(error)
else:
    raise AssertionError("an unknown implementation was accepted")
assert none_under_sdpa is None and model.attn_implementation == "sdpa"
