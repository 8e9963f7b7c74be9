"""Gradients of a tuple output's element (self_attn returns (out, weights)) and of a module's
input, read in reverse order inside one backward block."""
import sys

from nnsight.modeling.transformers import TransformersModel
from transformers import AutoTokenizer

path = sys.argv[1]
model = TransformersModel(path, task="text-generation", tokenizer=AutoTokenizer.from_pretrained(path))
with model.trace("Yesterday, Tom found a shiny coin"):
    out = model.model.layers[0].self_attn.output
    attn = out[0] if isinstance(out, tuple) else out
    mlp_in = model.model.layers[1].mlp.input
    loss = model.model.layers[1].mlp.output.sum()
    with loss.backward():
        mlp_in_grad = mlp_in.grad.save()
        attn_grad = attn.grad.save()
