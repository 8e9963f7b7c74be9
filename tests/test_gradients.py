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
    with pytest.raises(mlxsight.TraceError, match="scalar"):
        with stories.trace(PROMPT):
            stories.output.backward()


def test_grad_before_any_backward_is_none(stories):
    """As nnsight gives there (torch's ``.grad`` of a non-leaf tensor), with a warning that says
    where to read it; the trace runs on (tests/compat_scripts/grad_before_backward.py crosschecks)."""
    with pytest.warns(UserWarning, match="before any backward"):
        with stories.trace(PROMPT):
            grad = mlxsight.save(stories.model.layers[3].output.grad)
            out = stories.model.layers[3].output.save()
    assert grad is None and out.shape[-1] == stories.config.hidden_size


def test_array_on_the_left_of_a_proxy_is_a_clear_error(stories):
    x = mx.ones((64,))
    with pytest.raises(TypeError, match="put the proxy first"):
        with stories.trace(PROMPT):
            (x - stories.model.layers[0].output).save()


# -- editing gradients and several backward passes ---------------------------------------------------
def eager_grad_through(lm, text, earlier, later, cotangent):
    """The gradient at layer ``earlier``'s output when ``cotangent`` flows back from layer ``later``'s
    output: the vector-Jacobian product of the hand-written forward between them. Every path from
    an earlier layer to the logits passes through a later layer's output (the residual stream), so
    this is what a torch tensor hook returning ``cotangent`` at ``later`` leaves at ``earlier``."""
    ids = token_ids(lm, text)
    _, outs, _ = llama_forward(lm.mlx_model, ids)

    def later_output(delta):
        return llama_forward(lm.mlx_model, ids, lambda i, h: h + delta if i == earlier else h)[1][later]

    return mx.vjp(later_output, [mx.zeros_like(outs[earlier])], [cotangent])[1][0]


def eager_metric_grad(lm, text, layer, token):
    ids = token_ids(lm, text)
    _, outs, _ = llama_forward(lm.mlx_model, ids)

    def metric(delta):
        return llama_forward(lm.mlx_model, ids, lambda i, h: h + delta if i == layer else h)[2][0, -1, token]

    return mx.grad(metric)(mx.zeros_like(outs[layer]))


@pytest.mark.parametrize("form", ["assign", "in_place"])
def test_an_edited_gradient_flows_back_to_earlier_layers(stories, form):
    token = target_id(stories)
    weights = mx.random.normal((64,), key=mx.random.key(1))
    with stories.trace(PROMPT):
        early = stories.model.layers[1].output
        late = stories.model.layers[3].output
        with stories.output[0, -1, token].backward():
            before = late.grad.save()
            if form == "assign":
                late.grad = late.grad * weights
            else:
                late.grad[:, :-3] = 0
            after = late.grad.save()
            early_grad = early.grad.save()
    g3 = eager_metric_grad(stories, PROMPT, 3, token)
    edited = g3 * weights if form == "assign" else mx.concatenate([mx.zeros_like(g3[:, :-3]), g3[:, -3:]], axis=1)
    np.testing.assert_allclose(np.array(before), np.array(g3), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.array(after), np.array(edited), rtol=1e-4, atol=1e-6)
    reference = eager_grad_through(stories, PROMPT, 1, 3, edited)
    np.testing.assert_allclose(np.array(early_grad), np.array(reference), rtol=1e-3, atol=1e-5)  # float32 through two layers: ~1e-6 off near zero
    unedited = eager_metric_grad(stories, PROMPT, 1, token)
    assert not np.allclose(np.array(early_grad), np.array(unedited), atol=1e-4)  # the edit did reach it


def test_an_edited_gradient_in_one_invoke_of_a_batch(stories):
    short, long = "Lily", PROMPT  # the longer prompt needs no padding: its rows equal a solo forward
    token = target_id(stories)
    with stories.trace() as tracer:
        with tracer.invoke(short):
            stories.output.save()
        with tracer.invoke(long):
            early = stories.model.layers[0].output
            late = stories.model.layers[2].output
            with stories.output[0, -1, token].backward():
                before = late.grad.clone().save()
                late.grad = late.grad * 3.0
                after = late.grad.save()
                early_grad = early.grad.save()
    g2 = eager_metric_grad(stories, long, 2, token)
    assert before.shape == after.shape == (1, *g2.shape[1:])
    np.testing.assert_allclose(np.array(before), np.array(g2), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.array(after), np.array(g2 * 3.0), rtol=1e-4, atol=1e-6)
    reference = eager_grad_through(stories, long, 0, 2, g2 * 3.0)
    np.testing.assert_allclose(np.array(early_grad), np.array(reference), rtol=1e-3, atol=1e-5)  # float32 through two layers, batched: ~2e-6 off near zero


def test_each_backward_is_its_own_gradient_computation(stories):
    a, b = target_id(stories), stories.tokenizer.convert_tokens_to_ids("▁He")
    with stories.trace(PROMPT):
        h = stories.model.layers[2].output
        logits = stories.output
        with logits[0, -1, a].backward(retain_graph=True):
            first = h.grad.save()
            h.grad = h.grad * 0  # an edit in one pass does not reach the next
        with logits[0, -1, b].backward():
            second = h.grad.save()
        difference = (first - second).save()  # values of both passes combine after them
    ga, gb = eager_metric_grad(stories, PROMPT, 2, a), eager_metric_grad(stories, PROMPT, 2, b)
    np.testing.assert_allclose(np.array(first), np.array(ga), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.array(second), np.array(gb), rtol=1e-4, atol=1e-6)  # not ga + gb
    np.testing.assert_allclose(np.array(difference), np.array(ga - gb), rtol=1e-4, atol=1e-6)


def test_a_gradient_edit_after_a_later_reached_read_is_out_of_order(stories):
    with pytest.raises(mlxsight.OutOfOrderError, match="reaches later"):
        with stories.trace(PROMPT):
            early = stories.model.layers[1].output
            late = stories.model.layers[3].output
            with stories.output[0, -1, 5].backward():
                early.grad.save()
                late.grad = late.grad * 2
    with pytest.raises(mlxsight.OutOfOrderError, match="reaches later"):
        with stories.trace(PROMPT):
            early = stories.model.layers[1].output
            late = stories.model.layers[3].output
            with stories.output[0, -1, 5].backward():
                late.grad = early.grad[:, :1] * late.grad


def test_gradients_are_requested_from_the_loss_back(stories):
    """nnsight's rule: an earlier value's gradient requested before a later one's is out of order;
    reads may opt out (their values do not depend on the order), and then equal the ordered ones."""
    def read(first, second):
        with stories.trace(PROMPT):
            hs = [stories.model.layers[i].output for i in range(5)]
            with stories.output[0, -1, 5].backward():
                a = hs[first].grad.save()
                b = hs[second].grad.save()
        return a, b

    with pytest.raises(mlxsight.OutOfOrderError, match="reverse forward order"):
        read(1, 3)
    late, early = read(3, 1)
    mlxsight.set_relaxed_order(True)
    try:
        relaxed = read(1, 3)
    finally:
        mlxsight.set_relaxed_order(False)
    assert mx.array_equal(relaxed[0], early) and mx.array_equal(relaxed[1], late)
    with pytest.raises(mlxsight.OutOfOrderError, match="reverse forward order"):
        read(1, 3)  # a schedule compiled while relaxed is not reused when strict


def test_gradient_of_a_value_the_loss_reads_directly(stories):
    """d loss / d value counts the path through the reads at that point too: for the logits and a
    loss computed straight from them, ``sum(logits * w)``, it is ``w`` (plus nothing downstream);
    for a layer read both directly and through the rest of the model, the sum of both paths."""
    w = mx.random.normal((stories.config.vocab_size,), key=mx.random.key(0))
    with stories.trace(PROMPT):
        logits = stories.output
        with (logits * w).sum().backward():
            g = logits.grad.save()
    np.testing.assert_array_equal(np.array(g), np.broadcast_to(np.array(w), g.shape))

    layer = 2
    ids = token_ids(stories, PROMPT)
    _, outs, _ = llama_forward(stories.mlx_model, ids)
    v = mx.random.normal(outs[layer].shape[-1:], key=mx.random.key(1))

    def loss(delta):  # the hand-written forward: the layer's output read directly and flowing on
        _, hs, out = llama_forward(stories.mlx_model, ids, lambda i, h: h + delta if i == layer else h)
        return (hs[layer] * v).sum() + out[0, -1, target_id(stories)]

    with stories.trace(PROMPT):
        h = stories.model.layers[layer].output
        total = (h * v).sum() + stories.output[0, -1, target_id(stories)]
        with total.backward():
            got = h.grad.save()
    np.testing.assert_allclose(np.array(got), np.array(mx.grad(loss)(mx.zeros_like(outs[layer]))),
                               rtol=1e-4, atol=1e-5)
