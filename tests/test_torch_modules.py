"""NNsight(torch_module): standard torch layers mirrored in MLX, checked against torch itself."""

import json

import mlx.core as mx
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import mlxsight
from mlxsight.torch_modules import mirror

from test_conformance_causes import SCRIPTS, run


def _net(seed: int, dropout: bool = False) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    nn = torch.nn
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 12), nn.LayerNorm(12), nn.GELU(),
                         nn.GELU(approximate="tanh"), nn.Tanh(), nn.Linear(12, 8), nn.SiLU(), nn.Sigmoid(),
                         nn.Identity(), nn.Dropout(0.5 if dropout else 0.0), nn.Linear(8, 4), nn.Softmax(dim=-1))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 1000), batch=st.integers(1, 4), extra=st.sampled_from([(), (3,)]))
def test_the_mirror_computes_what_torch_computes(seed, batch, extra):
    net = _net(seed).eval()
    x = torch.randn(batch, *extra, 6, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        want = net(x).numpy()
    got = np.array(mirror(net)(mx.array(x.numpy())))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_embedding_and_flatten():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Embedding(11, 4), torch.nn.Flatten(), torch.nn.Linear(12, 3))
    ids = torch.tensor([[1, 5, 10], [0, 2, 3]])
    with torch.no_grad():
        want = net(ids).numpy()
    np.testing.assert_allclose(np.array(mirror(net)(mx.array(ids.numpy()))), want, rtol=1e-5, atol=1e-6)


def test_nnsight_on_a_torch_sequential_reads_and_writes_like_torch_hooks():
    net = _net(3).eval()
    x = torch.randn(2, 6, generator=torch.Generator().manual_seed(1))
    model = mlxsight.NNsight(net)
    assert [type(c.mlx_module).__name__ for c in model._children][:2] == ["Linear", "ReLU"]
    with model.trace(x):
        first = model[0].output.save()
        model[2].output[:, :5] = 0
        out = model.output.save()
    # the reference: torch itself, the same edit made by a forward hook
    seen = {}
    h0 = net[0].register_forward_hook(lambda m, a, o: seen.setdefault("first", o.detach().clone()))
    h2 = net[2].register_forward_hook(lambda m, a, o: torch.cat([torch.zeros_like(o[:, :5]), o[:, 5:]], dim=1))
    try:
        with torch.no_grad():
            want = net(x)
    finally:
        h0.remove(), h2.remove()
    np.testing.assert_allclose(np.array(first), seen["first"].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.array(out), want.numpy(), rtol=1e-5, atol=1e-6)


def test_named_children_of_an_ordered_dict_keep_their_names():
    """``nn.Sequential(OrderedDict(...))`` (nnsight's walkthrough): ``model.layer1`` addresses the
    same layer as in torch, the forward runs in the dict's order, and edits land like torch hooks."""
    from collections import OrderedDict

    torch.manual_seed(0)
    net = torch.nn.Sequential(OrderedDict([("layer1", torch.nn.Linear(5, 10)), ("act", torch.nn.ReLU()),
                                           ("layer2", torch.nn.Linear(10, 2))])).requires_grad_(False)
    x = torch.rand(1, 5)
    model = mlxsight.NNsight(net)
    with model.trace(x):
        hidden = model.layer1.output.save()
        model.layer1.output[:, 0] = 0
        out = model.output.save()
    edited = net.layer1(x)
    edited[:, 0] = 0
    # the saved output is the tensor the in-place edit then changed, as in torch/nnsight
    np.testing.assert_allclose(np.array(hidden), edited.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.array(out), net.layer2(net.act(edited)).numpy(), rtol=1e-5, atol=1e-6)


def test_a_module_with_its_own_forward_is_refused_by_name():
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(2, 2)

        def forward(self, x):
            return self.fc(x) * 2

    with pytest.raises(TypeError, match=r"torch module Block cannot be mirrored.*--backend nnsight"):
        mlxsight.NNsight(torch.nn.Sequential(torch.nn.Linear(2, 2), Block()))


def test_torch_sequential_crosscheck_against_nnsight(tmp_path):
    out = tmp_path / "table.json"
    proc = run("-m", "compat", "crosscheck", str(SCRIPTS / "torch_sequential.py"), "--json", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert {"first", "out", "normed_in", "width", "doubled", "largest"} <= {r["name"].split()[-1] for r in rows}
