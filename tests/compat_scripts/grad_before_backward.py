"""nnsight.net's attribution-patching tutorial: `.grad` read (and saved) in an invoke before that
invoke's `value.backward()`. nnsight gives torch's `.grad` of a non-leaf tensor there, None, and a
plain `backward()` does not fill it in; the activations and logits save as usual."""
import sys

import nnsight

from nnsight.modeling.transformers import TransformersModel
from transformers import AutoTokenizer

path = sys.argv[1]
model = TransformersModel(path, task="text-generation", tokenizer=AutoTokenizer.from_pretrained(path))
clean_out, corrupted_out, corrupted_grads = [], [], []
with model.trace() as tracer:
    with tracer.invoke("Yesterday, Tom found a shiny coin"):
        for layer in model.model.layers:
            clean_out.append(layer.self_attn.o_proj.input.save())
    with tracer.invoke("Yesterday, Sam found a shiny coin"):
        for layer in model.model.layers:
            attn_out = layer.self_attn.o_proj.input
            corrupted_out.append(attn_out.save())
            corrupted_grads.append(attn_out.grad.save())
        logits = model.lm_head.output.save()
        value = logits[:, -1, :].sum()
        value.backward()
        none_grads = nnsight.save(sum(g is None for g in corrupted_grads))
assert none_grads == len(model.model.layers), none_grads  # every .grad read before backward() is None
