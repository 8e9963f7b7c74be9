"""The wrapped module as nnsight scripts see it (``model._module``): a torch module whose
parameters are meta until dispatch, whose forward hooks see (and replace) what transformers' hooks
see on the same checkpoint, and whose ``generate`` is transformers'. Runs on both backends."""
import sys

import torch
from nnsight.modeling.transformers import TransformersModel
from transformers import AutoModelForCausalLM, AutoTokenizer

path = sys.argv[1]
model = TransformersModel(path, task="text-generation", tokenizer=AutoTokenizer.from_pretrained(path))
view = model._module
assert isinstance(view, torch.nn.Module) and view is model._module
assert model.dispatched is False and view.device.type == "meta"
assert all(p.device.type == "meta" for p in view.parameters())
assert view.config is model.config
assert isinstance(view.transformer.h, torch.nn.ModuleList)
assert view.transformer.h[0] is model.transformer.h[0]._module
# The module tree and the state dict have transformers' names and count (the tied lm_head.weight
# is listed in the state dict, once in parameters()); values are the checkpoint's after dispatch.
reference_names = dict(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).named_modules())
assert [n for n, _ in view.named_modules()] == list(reference_names)
assert set(view.state_dict()) == set(AutoModelForCausalLM.from_pretrained(path).state_dict())
assert len(list(view.parameters())) == len(list(reference_names[""].parameters()))
model.dispatch()  # nnsight swaps in the real module here: hooks go on the dispatched one
view = model._module
assert model.dispatched is True and all(p.device.type == "cpu" for p in view.parameters())
ref = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
ids = torch.tensor([[3, 17, 42, 5, 9]])
seen, expected = [], []
h1 = view.transformer.h[0].mlp.register_forward_hook(lambda m, a, o: seen.append(o.clone()))
h2 = ref.transformer.h[0].mlp.register_forward_hook(lambda m, a, o: expected.append(o.clone()))
with model.trace(ids):
    pass
with torch.no_grad():
    ref(ids)
h1.remove(), h2.remove()
assert len(seen) == 1 == len(expected)
torch.testing.assert_close(seen[0], expected[0], atol=1e-4, rtol=1e-4)
torch.testing.assert_close(view.transformer.wpe.weight, ref.transformer.wpe.weight)
torch.testing.assert_close(view.lm_head.weight, ref.lm_head.weight)


def logits_hooked(register):
    """The traced logits and transformers' with the same hook registered on both models."""
    handles = register(view), register(ref)
    with model.trace(ids):
        logits = model.output.logits.save()
    with torch.no_grad():
        expected = ref(ids).logits
    for handle in handles:
        handle.remove()
    return logits, expected


# A hook's return value replaces the output (as in torch), in both models alike.
zeroed, ref_zeroed = logits_hooked(lambda m: m.transformer.h[0].mlp.register_forward_hook(lambda _, a, o: o * 0))
torch.testing.assert_close(zeroed, ref_zeroed, atol=1e-4, rtol=1e-4)
# A pre-hook's return value replaces the input.
doubled, ref_doubled = logits_hooked(
    lambda m: m.transformer.ln_f.register_forward_pre_hook(lambda _, a: (a[0] * 2,)))
torch.testing.assert_close(doubled, ref_doubled, atol=1e-4, rtol=1e-4)
# Every handle removed: the model is as it was (its classes, its outputs, no forced whole runs).
import nnsight

if getattr(nnsight, "BACKEND", None) == "mlx":
    mlx_mlp = model.transformer.h[0].mlp.mlx_module
    assert "_torch_hooks_original" not in type(mlx_mlp).__dict__ and model.whole_forward is False
with model.trace(ids):
    plain = model.output.logits.save()
with torch.no_grad():
    torch.testing.assert_close(plain, ref(ids).logits, atol=1e-4, rtol=1e-4)
with model.scan(ids):
    fake = model.transformer.wte.output.save()
assert "Fake" in type(fake).__name__ and tuple(fake.shape) == (1, 5, model.config.n_embd)
mask = torch.ones_like(ids)
out = view.generate(input_ids=ids, attention_mask=mask, max_new_tokens=3, do_sample=False)
ref_out = ref.generate(input_ids=ids, attention_mask=mask, max_new_tokens=3, do_sample=False,
                       pad_token_id=model.tokenizer.pad_token_id)
assert torch.equal(out, ref_out), (out, ref_out)
# A trace with a backward pass runs the forward once, so a hook fires once.
seen = []
h1 = view.transformer.h[0].mlp.register_forward_hook(lambda m, a, o: seen.append(o.clone()))
with model.trace(ids):
    hidden = model.transformer.h[1].output
    loss = model.output.logits.sum()
    with loss.backward():
        grad = hidden.grad.save()
h1.remove()
assert len(seen) == 1 and tuple(grad.shape) == (1, 5, model.config.n_embd)
print("VIEW OK")
