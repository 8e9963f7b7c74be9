"""Editing gradients and several backward passes in one trace, in the second invoke of a batch:
``x.grad = x.grad * 3`` reaches the earlier layer's gradient, and the second backward is its own."""
import sys

from nnsight.modeling.transformers import TransformersModel
from transformers import AutoTokenizer

path = sys.argv[1]
model = TransformersModel(path, task="text-generation", tokenizer=AutoTokenizer.from_pretrained(path))
with model.trace() as tracer:
    with tracer.invoke("Tom"):
        model.lm_head.output.save()
    with tracer.invoke("Yesterday, Tom found a shiny coin"):
        early = model.model.layers[0].output
        late = model.model.layers[1].output
        with model.lm_head.output[0, -1].sum().backward(retain_graph=True):
            late_before = late.grad.clone().save()
            late.grad = late.grad * 3.0
            late_after = late.grad.save()
            early_grad = early.grad.save()
        with (model.lm_head.output[0, -1, 5] * 2).backward():
            late_second = late.grad.save()
            early_second = early.grad.save()
