"""An nnsight script using the features beyond one plain forward: generation with per-step
interventions, gradients, cache, skip, stop, edit, session, scan and .source (Llama-family paths).
``python -m compat crosscheck`` runs it on mlxsight and on nnsight and compares every saved value.

    python features_tour.py CHECKPOINT
"""
import sys

import torch
from transformers import AutoTokenizer

import nnsight
from nnsight import LanguageModel

path = sys.argv[1]
tok = AutoTokenizer.from_pretrained(path)
model = LanguageModel(path, tokenizer=tok)
layers = model.model.layers
PROMPT = "Once upon a time, Lily saw a red ball"

# generation: per-step logits, a steering vector on every step, the generated ids
vector = torch.linspace(-0.5, 0.5, model.config.hidden_size)
with model.generate(PROMPT, max_new_tokens=4, do_sample=False) as tracer:
    step_logits = nnsight.save(list())
    for step in tracer.iter[:4]:  # bounded, so the code after the loop runs
        layers[1].output[:, -1, :] += vector
        step_logits.append(model.lm_head.output[0, -1])
    generated = tracer.result.save()

# gradients: attribution of a logit to a residual stream
with model.trace(PROMPT):
    h = layers[1].output
    h_saved = h.save()
    logits = model.lm_head.output
    metric = logits[0, -1, 5] - logits[0, -1, 7]
    with metric.backward():
        grad = h.grad.save()

# cache of every module (read back through a later trace, which saves what the cache holds)
with model.trace(PROMPT) as tracer:
    cache = tracer.cache()
with model.trace(PROMPT):
    cached_layer1 = nnsight.save(cache["model.model.layers.1"].output)
    cached_norm = nnsight.save(cache["model.model.norm"].output)

# skip a layer (pass its input through), and stop early
with model.trace(PROMPT):
    layers[2].skip(layers[2].input)
    skipped_logits = model.lm_head.output.save()
with model.trace(PROMPT) as tracer:
    early = layers[0].output.save()
    tracer.stop()

# a persistent edit on a copy of the model
with model.edit() as (editor, edited):
    edited.model.layers[0].mlp.output[:] = 0
with edited.trace(PROMPT):
    edited_logits = edited.lm_head.output.save()
with model.trace(PROMPT):
    unedited_logits = model.lm_head.output.save()

# a session: a value from one trace patched into the next
with model.session():
    with model.trace(PROMPT):
        patch = layers[1].output[:, -1, :]
    with model.trace("Tom found a blue kite"):
        layers[1].output[:, -1, :] = patch
        session_logits = model.lm_head.output.save()

# scan: shapes without computing
with model.scan(PROMPT):
    scanned_shape = nnsight.save(layers[0].output.shape)

# .source: an operation inside the MLP's forward
with model.trace(PROMPT):
    act = layers[0].mlp.source.self_act_fn_0.output.save()
    layers[1].mlp.source.self_act_fn_0.output[:] = 0
    source_logits = model.lm_head.output.save()

print(tok.decode(generated[0]), tuple(grad.shape), tuple(scanned_shape))
