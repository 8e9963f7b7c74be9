"""Gradients inside traces (one forward + one backward), checked against finite differences."""

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import mlxsight
from reference import llama_forward, token_ids

PROMPT = "Once upon a time, there was a little girl named Lily."


def target_id(lm):
    return lm.tokenizer.convert_tokens_to_ids("▁She")


def metric_with_edit(lm, layer, t, j, eps):
    with lm.trace(PROMPT):
        lm.model.layers[layer].output[0, t, j] += eps
        value = lm.output[0, -1, target_id(lm)].save()
    return float(value)


def eager_grad(lm, layer):
    """mx.grad of the hand-written forward, w.r.t. a perturbation of one layer's output."""
    ids = token_ids(lm, PROMPT)
    _, outs, _ = llama_forward(lm.mlx_model, ids)

    def metric(delta):
        _, _, logits = llama_forward(lm.mlx_model, ids, lambda i, h: h + delta if i == layer else h)
        return logits[0, -1, target_id(lm)]

    return mx.grad(metric)(mx.zeros_like(outs[layer]))


@pytest.mark.parametrize("layer", [0, 2, 4])
def test_activation_gradient_matches_eager_autodiff(stories, layer):
    with stories.trace(PROMPT):
        h = stories.model.layers[layer].output
        loss = stories.output[0, -1, target_id(stories)]
        with loss.backward():
            grad = h.grad.save()
    np.testing.assert_allclose(np.array(grad), np.array(eager_grad(stories, layer)), rtol=1e-4, atol=1e-6)


@settings(max_examples=5, deadline=None)
@given(layer=st.integers(0, 4), t=st.integers(0, 15), j=st.integers(0, 63))
def test_activation_gradient_matches_finite_differences(stories, layer, t, j):
    with stories.trace(PROMPT):
        h = stories.model.layers[layer].output
        loss = stories.output[0, -1, target_id(stories)]
        with loss.backward():
            grad = h.grad.save()
    eps = 1e-2  # float32 logits of magnitude ~20: differences resolve gradients to ~1e-3
    fd = (metric_with_edit(stories, layer, t, j, eps) - metric_with_edit(stories, layer, t, j, -eps)) / (2 * eps)
    assert float(grad[0, t, j]) == pytest.approx(fd, rel=5e-2, abs=1e-3)


def test_grad_of_views_and_attribution_patching(stories):
    clean = "Once upon a time, there was a little girl named Lily. She was very happy. One day,"
    corrupt = clean.replace("Lily", "Tim")
    lily, tim = (stories.tokenizer.convert_tokens_to_ids(w) for w in ("▁Lily", "▁Tim"))
    with stories.trace(clean):
        clean_h = stories.model.layers[1].output.save()
    with stories.trace(corrupt):
        h = stories.model.layers[1].output
        last = h[:, -1]
        logits = stories.output
        diff = logits[0, -1, lily] - logits[0, -1, tim]
        diff.backward()  # the plain-call form works too
        full = h.grad.save()
        part = last.grad.save()
        corrupt_h = h.save()
        attribution = (-(h - clean_h) * h.grad).sum(axis=-1).save()
    assert mx.array_equal(part, full[:, -1])
    np.testing.assert_allclose(np.array(attribution), np.array(((clean_h - corrupt_h) * full).sum(-1)), rtol=1e-5)
    assert int(mx.argmax(mx.abs(attribution[0]))) == 14  # the name position carries the effect


def test_gradient_of_one_invoke_equals_solo_trace(stories):
    texts = ["Once upon a time there was", "Lily"]
    with stories.trace() as tracer:
        with tracer.invoke(texts[0]):
            pass
        with tracer.invoke(texts[1]):
            h = stories.model.layers[2].output
            loss = stories.output[0, -1, 5]
            loss.backward()
            g = h.grad.save()
    with stories.trace(texts[1]):
        h = stories.model.layers[2].output
        stories.output[0, -1, 5].backward()
        solo = h.grad.save()
    n = solo.shape[1]
    assert g.shape[0] == 1
    assert mx.allclose(g[:, -n:], solo, atol=1e-5)


def test_gradient_errors(stories):
    with pytest.raises(mlxsight.TraceError, match="does not depend"):
        with stories.trace(PROMPT):
            early = stories.model.layers[1].output.sum()
            early.backward()
            stories.model.layers[3].output.grad.save()
    with pytest.raises(mlxsight.TraceError, match="after calling backward"):
        with stories.trace(PROMPT):
            stories.model.layers[3].output.grad.save()
    with pytest.raises(mlxsight.TraceError, match="scalar"):
        with stories.trace(PROMPT):
            stories.output.backward()


def test_array_on_the_left_of_a_proxy_is_a_clear_error(stories):
    x = mx.ones((64,))
    with pytest.raises(TypeError, match="put the proxy first"):
        with stories.trace(PROMPT):
            (x - stories.model.layers[0].output).save()
