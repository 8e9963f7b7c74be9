"""An nnsight script touring one checkpoint: residuals, internals, patching, ablation, steering,
logit lens and batched invokes. ``python -m compat crosscheck`` runs it on mlxsight and on nnsight.

    python architecture_tour.py CHECKPOINT
"""
import json
import sys
from pathlib import Path

import torch
from transformers import AutoTokenizer

import nnsight
from nnsight import LanguageModel

path = sys.argv[1]
model = LanguageModel(path, tokenizer=AutoTokenizer.from_pretrained(path))
family = json.loads((Path(path) / "config.json").read_text())["model_type"]

# Where each family keeps its parts (transformers' names, which mlxsight's HF view reproduces).
LAYOUT = {
    "gpt2": ("transformer", "h", "wte", "ln_f", "attn", "attn.c_proj", "mlp.c_proj"),
    "gpt_neox": ("gpt_neox", "layers", "embed_in", "final_layer_norm", "attention", "attention.dense",
                 "mlp.dense_4h_to_h"),
}
base_name, layers_name, embed_name, norm_name, attn_name, attn_proj, mlp_proj = LAYOUT.get(
    family, ("model", "layers", "embed_tokens", "norm", "self_attn", "self_attn.o_proj", "mlp.down_proj"))


def get(envoy, dotted):
    for part in dotted.split("."):
        envoy = getattr(envoy, part)
    return envoy


base = getattr(model, base_name)
layers = getattr(base, layers_name)
final_norm = getattr(base, norm_name)
PROMPT = "Once upon a time, Lily saw a red ball in the park"
CLEAN, CORRUPT = "Lily saw a red ball", "Tom found the blue kite near"

# 1. embeddings, attention and MLP internals, residuals, final norm, logits (in forward order, as
#    nnsight requires), then a logit lens over the saved residuals
with model.trace(PROMPT):
    embeddings = get(base, embed_name).output.save()
    attn_proj_in = get(layers[0], attn_proj).input.save()
    attn_out = get(layers[0], attn_name).output[0].save()
    residuals = nnsight.save([])
    for i, layer in enumerate(layers):
        if i == 1:
            mlp_proj_in = get(layer, mlp_proj).input.save()
        residuals.append(layer.output)
    normed = final_norm.output.save()
    logits = model.lm_head.output.save()
    lens = nnsight.save([model.lm_head(final_norm(h)) for h in residuals])

# 2. activation patching across two invokes (nnsight needs a barrier for that)
with model.trace() as tracer:
    barrier = tracer.barrier(2)
    with tracer.invoke(CLEAN):
        clean_h = layers[1].output[:, -1, :]
        barrier()
        clean_logits = model.lm_head.output[:, -1, :].save()
    with tracer.invoke(CORRUPT):
        barrier()
        layers[1].output[:, -1, :] = clean_h
        patched_logits = model.lm_head.output[:, -1, :].save()

# 3. ablation: zero one attention output in place, replace one MLP output
with model.trace(PROMPT):
    get(layers[0], attn_name).output[0][:] = 0
    mlp = get(layers[1], "mlp")
    mlp.output = mlp.output * 0
    ablated = model.lm_head.output.save()

# 4. steering: add a fixed vector to the residual stream after a layer
hidden = embeddings.shape[-1]
vector = torch.linspace(-1.0, 1.0, hidden)
with model.trace(PROMPT):
    layers[1].output[:, :, :] += vector
    steered = model.lm_head.output.save()

# 5. several prompts of different lengths, batched with left padding
with model.trace() as tracer:
    with tracer.invoke("A dog"):
        short = model.lm_head.output.save()
    with tracer.invoke(PROMPT):
        long_last = layers[-1].output[:, -1].save()
        long = model.lm_head.output.save()

print(family, tuple(logits.shape), float(patched_logits.abs().sum()))
