"""``.source``: operations inside a module's forward, checked against the eager computation."""

import mlx.core as mx
import mlx.nn as nn
import pytest
from mlx_lm.models.activations import swiglu

import mlxsight
from mlxsight import attention
from mlxsight.source import SourceNotAvailable
from reference import llama_forward, token_ids


def test_operation_names_follow_nnsight_rules(stories):
    src = stories.model.layers[0].mlp.source
    assert src.operations == ["self_gate_proj_0", "self_up_proj_0", "swiglu_0", "self_down_proj_0"]
    ops = stories.model.layers[0].self_attn.source.operations
    assert ops[:6] == ["self_q_proj_0", "self_k_proj_0", "self_v_proj_0", "queries_0", "keys_0", "values_0"]
    assert "queries_reshape_0" in ops and "scaled_dot_product_attention_0" in ops
    assert "swiglu_0" in repr(src) and "|" in repr(src)
    with pytest.raises(SourceNotAvailable, match="available: self_gate_proj_0"):
        src.nope  # noqa: B018


def test_reading_and_setting_operations_match_eager(stories, prompt):
    ids = token_ids(stories, prompt)
    inner = stories.mlx_model.model
    _, outs, _ = llama_forward(stories.mlx_model, ids)
    h0 = outs[0]
    mlp = inner.layers[1].mlp
    x = inner.layers[1].post_attention_layernorm(h0 + inner.layers[1].self_attn(inner.layers[1].input_layernorm(h0), "causal"))
    with stories.trace(prompt):
        src = stories.model.layers[1].mlp.source
        gate_in = src.self_gate_proj_0.input.save()
        gate = src.self_gate_proj_0.output.save()
        src.swiglu_0.output = src.swiglu_0.output * 0.5
        mlp_out = stories.model.layers[1].mlp.output.save()
    assert mx.allclose(gate, mlp.gate_proj(x), atol=1e-5)
    assert mx.allclose(gate_in, x, atol=1e-5)
    assert mx.allclose(mlp_out, mlp.down_proj(swiglu(mlp.gate_proj(x), mlp.up_proj(x)) * 0.5), atol=1e-5)
    assert all(type(m).__name__ != "__mlxsight_shell__" for _, m in stories.mlx_model.named_modules())


def test_recomputed_attention_weights(stories, prompt):
    ids = token_ids(stories, prompt)
    with stories.trace(prompt):
        attn = stories.model.layers[2].self_attn
        v = attn.source.values_1.output  # in the order the forward makes them
        q = attn.source.self_rope_2.output
        k = attn.source.self_rope_3.output
        w = attention.weights(q, k, scale=attn.scale).save()
        out = attn.source.scaled_dot_product_attention_0.output.save()
    T = ids.shape[1]
    assert w.shape == (1, 8, T, T)
    assert mx.allclose(w.sum(-1), mx.ones((1, 8, T)), atol=1e-5)
    assert float(mx.abs(mx.triu(w[0, 0], k=1)).max()) == 0  # causal
    # The fused kernel's output equals weights @ values (key heads repeated for the query heads).
    with stories.trace(prompt):
        v = stories.model.layers[2].self_attn.source.values_1.output.save()
    manual = w @ mx.repeat(v, 2, axis=1)
    assert mx.allclose(manual, out, atol=1e-5)


def test_source_skip_and_generation_steps(stories):
    prompt = "Once upon a time"
    with stories.generate(prompt, max_new_tokens=3) as tracer:
        shapes = mlxsight.save([])
        for step in tracer.iter[:]:
            shapes.append(stories.model.layers[0].mlp.source.swiglu_0.output.shape)
    assert shapes == [(1, 5, 172), (1, 1, 172), (1, 1, 172)]
    with stories.trace(prompt):
        src = stories.model.layers[0].mlp.source
        src.swiglu_0.skip(mx.zeros((1, 5, 172)))
        out = stories.model.layers[0].mlp.output.save()
    assert float(mx.abs(out).max()) == 0


def test_source_of_a_plain_module():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 3)

        def __call__(self, x):
            h = self.a(x)
            h = mx.maximum(h, 0)
            return h * 2

    net = mlxsight.NNsight(Net())
    assert net.source.operations == ["self_a_0", "h_0", "mx_maximum_0", "h_1"]
    x = mx.array([[1.0, -2.0, 3.0]])
    with net.trace(x):
        pre = net.source.self_a_0.output.save()
        net.source.mx_maximum_0.output = net.source.mx_maximum_0.output + 1
        y = net.output.save()
    m = net._module
    assert mx.allclose(pre, m.a(x)) and mx.allclose(y, (mx.maximum(m.a(x), 0) + 1) * 2)
