"""Random chains of proxy operations and slices, compared with the same chain run eagerly."""

import mlx.core as mx
import numpy as np
from hypothesis import given, settings, strategies as st

import mlxsight

from reference import llama_forward, token_ids

PROMPT = "Once upon a time there was a big dog"

UNARY = [
    ("neg", lambda x: -x), ("abs", abs), ("exp", lambda x: (x * 0.1).exp()), ("tanh", lambda x: mlxsight.apply(mx.tanh, x)),
    ("T", lambda x: x.T), ("sum-1", lambda x: x.sum(axis=-1, keepdims=True)), ("mean", lambda x: x.mean(axis=0, keepdims=True)),
    ("square", lambda x: x.square()), ("reshape", lambda x: x.reshape(-1)), ("softmax", lambda x: mlxsight.apply(mx.softmax, x, axis=-1)),
]
BINARY = [("add", lambda x, c: x + c), ("radd", lambda x, c: c + x), ("mul", lambda x, c: x * c), ("rsub", lambda x, c: c - x),
          ("div", lambda x, c: x / (abs(c) + 1)), ("pow2", lambda x, c: x ** 2), ("gt", lambda x, c: (x > c) * 1.0)]


def eager_apply(ops, x):
    for kind, fn, c in ops:
        x = fn(x) if kind == "u" else fn(x, c)
    return x


ops_strategy = st.lists(
    st.one_of(
        st.tuples(st.just("u"), st.sampled_from(UNARY).map(lambda t: t[1]), st.just(None)),
        st.tuples(st.just("b"), st.sampled_from(BINARY).map(lambda t: t[1]), st.floats(-2, 2, allow_nan=False)),
    ),
    min_size=1, max_size=6,
)


@settings(max_examples=40, deadline=None)
@given(ops=ops_strategy, layer=st.integers(0, 4))
def test_random_op_chains_match_eager(stories, ops, layer):
    _, outs, _ = llama_forward(stories.mlx_model, token_ids(stories, PROMPT))
    with stories.trace(PROMPT):
        got = eager_apply(ops, stories.model.layers[layer].output[0]).save()
    ref = eager_apply(ops, outs[layer][0])
    np.testing.assert_allclose(np.array(got), np.array(ref), rtol=1e-5, atol=1e-5)


def slices(n):
    bound = st.one_of(st.none(), st.integers(-n, n))
    return st.one_of(st.integers(-n, n - 1), st.builds(slice, bound, bound, st.one_of(st.none(), st.integers(1, 3))))


@settings(max_examples=40, deadline=None)
@given(t=slices(10), d=slices(64), value=st.floats(-3, 3, allow_nan=False), layer=st.integers(0, 3))
def test_random_slice_writes_match_eager(stories, t, d, value, layer):
    ids = token_ids(stories, PROMPT)

    def edit(i, h):
        if i == layer:
            h = mx.array(h)
            h[:, t, d] = value
        return h

    _, outs, logits = llama_forward(stories.mlx_model, ids, edit)
    with stories.trace(PROMPT):
        stories.model.layers[layer].output[:, t, d] = value
        read_back = stories.model.layers[layer].output[:, t, d].save()
        out = stories.output.save()
    np.testing.assert_allclose(np.array(out), np.array(logits), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.array(read_back), np.array(outs[layer][:, t, d]))
