"""Torch modules attached to the model (nnsight's SAE pattern): an SAE with WrapperModule locations
applied in an edit with hook=True, its internals read and written in a later trace, a plain call of
an attached module, and the model as it was once the edits are cleared."""
import sys

import nnsight
import torch
from nnsight import LanguageModel
from nnsight.intervention.interleaver import OutOfOrderError
from nnsight.modeling.transformers import WrapperModule
from transformers import AutoTokenizer

model = LanguageModel(sys.argv[1], tokenizer=AutoTokenizer.from_pretrained(sys.argv[1]))
prompt = "The cat sat on the mat"
torch.manual_seed(0)
d = model.config.hidden_size


class SAE(torch.nn.Module):
    def __init__(self, d_model, n_features):
        super().__init__()
        self.encode = WrapperModule()
        self.decode = WrapperModule()
        self.W_enc = torch.nn.Parameter(torch.randn(d_model, n_features) / d_model**0.5)
        self.W_dec = torch.nn.Parameter(torch.randn(n_features, d_model) / n_features**0.5)
        self.inner = torch.nn.Linear(d_model, d_model)

    def forward(self, x):
        acts = self.encode(torch.relu(x @ self.W_enc))
        return self.decode(acts @ self.W_dec) + self.inner(x)


with model.trace(prompt):
    before = model.lm_head.output.save()

model.model.layers[1].sae = SAE(d, 4 * d)

with model.trace(prompt):  # a plain call: the module runs on the value, nothing is observed
    plain = model.model.layers[1].sae(model.model.layers[1].output).save()
    inner = model.model.layers[1].sae.inner(model.model.layers[1].output * 2).save()

with model.edit(inplace=True):
    acts = model.model.layers[1].output
    model.model.layers[1].output = model.model.layers[1].sae(acts, hook=True)

with model.trace(prompt):
    sae_in = model.model.layers[1].sae.input.save()
    feats = model.model.layers[1].sae.encode.output.save()
    recon = model.model.layers[1].sae.decode.output.save()
    lin_out = model.model.layers[1].sae.inner.output.save()
    layer = model.model.layers[1].output.save()
    edited = model.lm_head.output.save()

with model.trace(prompt):  # writes into the SAE's internals flow on through the edit
    model.model.layers[1].sae.encode.output[:, :, : 4 * d // 2] = 0
    halved = model.lm_head.output.save()

ordered = False
try:
    with model.trace(prompt):  # the SAE's forward runs decode before inner
        _ = model.model.layers[1].sae.inner.output
        _ = model.model.layers[1].sae.decode.output
except OutOfOrderError:
    ordered = True
assert ordered, "reading the SAE's internals out of order is an OutOfOrderError"

model.clear_edits()
with model.edit(inplace=True) as tracer:  # an open loop in an edit: the SAE runs at every step
    for _ in tracer.iter[:]:
        acts = model.model.layers[1].output
        model.model.layers[1].output = model.model.layers[1].sae(acts, hook=True)

with model.generate(prompt, max_new_tokens=3, do_sample=False, min_new_tokens=3) as tracer:
    step_feats = nnsight.save([])
    for _ in tracer.iter[:3]:
        step_feats.append(model.model.layers[1].sae.encode.output)
    ids = tracer.result.save()

model.clear_edits()
with model.trace(prompt):
    after = model.lm_head.output.save()

assert "forward" not in vars(model.model.layers[1].sae.encode), "the module is left as it was"
assert torch.allclose(before, after) and not torch.allclose(before, edited)
print("AUX OK")
