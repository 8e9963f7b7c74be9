"""Attribution patching against eager ``mx.grad`` and finite differences of plain traces."""

import mlxsight
import mlx.core as mx
import numpy as np
import pytest

from mlxsight import tools
from reference import llama_forward, token_ids

CLEAN = "Once upon a time, there was a little girl named Lily. She was very happy. One day,"
CORRUPT = CLEAN.replace("Lily", "Tim")


@pytest.fixture(scope="module")
def hf(stories_path):
    return mlxsight.LanguageModel(stories_path)


def names(lm):
    return lm.tokenizer.convert_tokens_to_ids("▁Lily"), lm.tokenizer.convert_tokens_to_ids("▁Tim")


def test_resid_equals_gradient_times_difference_from_mx_grad(stories):
    """Every cell is corrupted + d(metric)/d(resid) . (clean - corrupted), the gradient from
    ``mx.grad`` of a hand-written forward (mlx-lm's own tree)."""
    lily, tim = names(stories)
    res = tools.attribution_patching(stories, CLEAN, CORRUPT, tools.logit_diff(lily, tim), progress=False)
    assert res.method == "attribution" and res.scores.shape == (5, 24)
    clean_ids, corrupt_ids = token_ids(stories, CLEAN), token_ids(stories, CORRUPT)

    def inputs(ids):
        seen = []
        llama_forward(stories.mlx_model, ids, edit_input=lambda i, h: seen.append(h) or h)
        return seen

    clean_in, corrupt_in = inputs(clean_ids), inputs(corrupt_ids)
    _, _, logits = llama_forward(stories.mlx_model, corrupt_ids)
    corrupted = float(logits[0, -1, lily] - logits[0, -1, tim])
    for layer in range(5):
        def metric(delta, layer=layer):
            _, _, lg = llama_forward(stories.mlx_model, corrupt_ids,
                                     edit_input=lambda i, h: h + delta if i == layer else h)
            return lg[0, -1, lily] - lg[0, -1, tim]

        grad = np.array(mx.grad(metric)(mx.zeros_like(corrupt_in[layer])))[0]
        expected = corrupted + (grad * np.array(clean_in[layer] - corrupt_in[layer])[0]).sum(-1)
        np.testing.assert_allclose(res.scores[layer], expected, rtol=1e-4, atol=1e-4)
    assert res.corrupted == pytest.approx(corrupted, abs=1e-4)
    assert np.abs(res.scores - res.corrupted).max() > 1  # not vacuous


def fd_heads(lm, layer, pos, head, direction, eps=1e-3, d_head=8):
    lily, tim = names(lm)

    def value(e):
        with lm.trace(CORRUPT):
            x = lm.model.layers[layer].self_attn.o_proj.input
            x[:, pos, head * d_head:(head + 1) * d_head] += e * direction
            logits = lm.output.logits[0, -1].save()
        return float(logits[lily] - logits[tim])

    return (value(eps) - value(-eps)) / (2 * eps)


@pytest.mark.parametrize("layer, pos, head", [(0, 14, 6), (2, 14, 6), (4, 23, 0)])
def test_heads_match_finite_differences(hf, layer, pos, head):
    lily, tim = names(hf)
    res = tools.attribution_patching(hf, CLEAN, CORRUPT, tools.logit_diff(lily, tim), component="heads",
                                     layers=[layer], positions=[pos], progress=False)
    sl = slice(head * 8, (head + 1) * 8)
    with hf.trace() as tracer:
        with tracer.invoke(CLEAN):
            a = hf.model.layers[layer].self_attn.o_proj.input[0, pos, sl].save()
        with tracer.invoke(CORRUPT):
            b = hf.model.layers[layer].self_attn.o_proj.input[0, pos, sl].save()
    expected = fd_heads(hf, layer, pos, head, mx.array(np.array(a) - np.array(b)))
    assert res.scores[0, 0, head] - res.corrupted == pytest.approx(expected, rel=2e-2, abs=5e-3)


def test_correlates_with_activation_patching(hf):
    lily, tim = names(hf)
    res = tools.attribution_patching(hf, CLEAN, CORRUPT, tools.logit_diff(lily, tim), component="attn",
                                     compare=True, progress=False)
    exact = tools.activation_patching(hf, CLEAN, CORRUPT, tools.logit_diff(lily, tim), component="attn",
                                      progress=False)
    assert res.correlation == pytest.approx(np.corrcoef(res.scores.ravel(), exact.scores.ravel())[0, 1])
    assert res.correlation > 0.95
    assert (res.clean, res.corrupted) == pytest.approx((exact.clean, exact.corrupted), abs=1e-4)
