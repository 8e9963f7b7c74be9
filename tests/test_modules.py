"""NNsight over any mlx.nn.Module: structured outputs, identity, ad hoc calls, laziness."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

import mlxsight


class Attn(nn.Module):
    """Returns (out, None) like transformers' attention modules."""

    def __init__(self, d):
        super().__init__()
        self.proj = nn.Linear(d, d)

    def __call__(self, x, scale=1.0):
        return self.proj(x) * scale, None


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.attn = Attn(d)
        self.mlp = nn.Linear(d, d)

    def __call__(self, x):
        a, _ = self.attn(x, scale=0.5)
        return x + self.mlp(nn.gelu(x + a))


class Counter(nn.Module):
    """Counts how often its forward is built (to observe early stopping)."""

    calls = 0

    def __call__(self, x):
        Counter.calls += 1
        return x * 3


class Net(nn.Module):
    def __init__(self, d=8, n=4):
        super().__init__()
        self.blocks = [Block(d) for _ in range(n)]
        self.tail = Counter()
        self.head = nn.Linear(d, 3)

    def __call__(self, x):
        for b in self.blocks:
            x = b(x)
        return self.head(self.tail(x))


def eager(net, x, edit=None):
    outs = []
    for i, b in enumerate(net.blocks):
        x = b(x)
        if edit:
            x = edit(i, x)
        outs.append(x)
    return outs, net.head(net.tail(x))


@pytest.fixture()
def net():
    mx.random.seed(0)
    return mlxsight.NNsight(Net())


def test_tuple_outputs_structure_and_identity(net):
    x = mx.random.normal((2, 5, 8))
    with net.trace(x):
        args, kwargs = net.blocks[1].attn.inputs  # inputs before outputs, as the forward runs
        assert kwargs == {"scale": 0.5} and args[0].shape == (2, 5, 8)
        out = net.blocks[1].attn.output
        assert len(out) == 2 and out[1] is None
        a, none = out
        assert none is None and a is out[0]
        a_saved = a.save()
        y = net.output.save()
    ref_in = eager(net._module, x)[0][0]
    assert mx.allclose(a_saved, net._module.blocks[1].attn.proj(ref_in) * 0.5)
    assert mx.allclose(y, eager(net._module, x)[1])


def test_tuple_item_assignment_is_a_type_error_but_elements_are_editable(net):
    x = mx.random.normal((1, 3, 8))
    with pytest.raises(TypeError, match="tuple"):
        with net.trace(x):
            net.blocks[0].attn.output[0] = 0
    with net.trace(x):
        net.blocks[0].attn.output[0][:] = 0
        y = net.output.save()
    m = net._module
    h = x + m.blocks[0].mlp(nn.gelu(x))  # block 0 with zero attention output
    for b in m.blocks[1:]:
        h = b(h)
    assert mx.allclose(y, m.head(m.tail(h)), atol=1e-6)


def test_tuple_replacement(net):
    x = mx.random.normal((1, 3, 8))
    with net.trace(x):
        a, _ = net.blocks[2].attn.output
        net.blocks[2].attn.output = (a * 0, None)
        y = net.output.save()
    m = net._module
    h = x
    for i, b in enumerate(m.blocks):
        h = h + b.mlp(nn.gelu(h)) if i == 2 else b(h)
    assert mx.allclose(y, m.head(m.tail(h)), atol=1e-6)


def test_early_layers_only_stop_the_forward(net):
    x = mx.random.normal((1, 3, 8))
    Counter.calls = 0
    with net.trace(x):
        h = net.blocks[1].output.save()
    assert Counter.calls == 1  # the structure pass only; the run stopped after blocks.1
    with net.trace(x):
        h2 = net.blocks[1].output.save()
    assert Counter.calls == 1  # structure cached, run stopped early again
    with net.trace(x):
        y = net.output.save()
    assert Counter.calls == 2
    assert mx.array_equal(h, h2) and mx.allclose(h, eager(net._module, x)[0][1])
    assert mx.allclose(y, eager(net._module, x)[1])


def test_only_hooked_modules_are_touched_and_restored(net):
    x = mx.random.normal((1, 3, 8))
    classes = {p: type(m) for p, m in net._module.named_modules()}
    seen = {}

    def spy(v):
        seen.update({p: type(m).__name__ for p, m in net._module.named_modules()
                     if getattr(type(m), "_mlxsight_original_class", None)})
        return v

    with net.trace(x):
        h = mlxsight.apply(spy, net.blocks[2].mlp.output).save()
    assert set(seen) == {"blocks.2.mlp"}
    assert {p: type(m) for p, m in net._module.named_modules()} == classes


def test_second_invoke_with_rows_is_rejected_like_nnsight(net):
    with pytest.raises(NotImplementedError, match="batching multiple invokes"):
        with net.trace() as tr:
            with tr.invoke(mx.ones((1, 3, 8))):
                net.blocks[0].output.save()
            with tr.invoke(mx.ones((1, 3, 8))):
                net.blocks[0].output.save()


def test_envoy_navigation(net):
    assert len(net.blocks) == 4 and net.blocks[-1].path == "model.blocks.3"
    assert [e.path for e in net.blocks[1:3]] == ["model.blocks.1", "model.blocks.2"]
    assert net.blocks[0] is net.blocks[0] and net.get("blocks.0.attn") is net.blocks[0].attn
    assert "Attn" in repr(net.blocks[0])
    names = [p for p, _ in net.named_modules()]
    assert names[-1] == "model" and "model.blocks.0.attn.proj" in names
    assert isinstance(net.head.weight, mx.array)
    np.testing.assert_array_equal(np.array(net.head(mx.ones((1, 8)))), np.array(net._module.head(mx.ones((1, 8)))))
