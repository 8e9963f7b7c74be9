"""``.grad`` of a module's ``.input`` and of a tuple output's member, against eager ``mx.grad``."""

import mlx.core as mx
import numpy as np
import pytest

import mlxsight  # noqa: F401
from reference import llama_forward, token_ids

PROMPT = "Once upon a time, there was a little girl named Lily."


def eager_grad(lm, layer):
    """mx.grad of the hand-written forward w.r.t. a perturbation of layer ``layer``'s output."""
    ids = token_ids(lm, PROMPT)
    _, outs, _ = llama_forward(lm.mlx_model, ids)
    she = lm.tokenizer.convert_tokens_to_ids("▁She")

    def metric(delta):
        _, _, logits = llama_forward(lm.mlx_model, ids, lambda i, h: h + delta if i == layer else h)
        return logits[0, -1, she]

    return np.array(mx.grad(metric)(mx.zeros_like(outs[layer])))


@pytest.mark.parametrize("layer", [1, 3])
def test_grad_of_layer_input_is_grad_of_previous_output(stories, layer):
    she = stories.tokenizer.convert_tokens_to_ids("▁She")
    with stories.trace(PROMPT):
        x = stories.model.layers[layer].input
        loss = stories.output[0, -1, she]
        with loss.backward():
            grad = x.grad.save()
            part = x.grad[:, -2:].save()
    expected = eager_grad(stories, layer - 1)
    np.testing.assert_allclose(np.array(grad), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.array(part), expected[:, -2:], rtol=1e-4, atol=1e-6)


def test_grad_of_tuple_output_member_and_projection_input(stories, stories_path):
    """HF view: ``self_attn.output[0]`` (a tuple member) against the mlx view's array output, and
    ``o_proj.input`` (``o_proj(x) = x @ W.T``, so its gradient is the output's times ``W``)."""
    lm = mlxsight.LanguageModel(stories_path)
    she = lm.tokenizer.convert_tokens_to_ids("▁She")
    attn = lm.model.layers[2].self_attn
    with lm.trace(PROMPT):
        o_in = attn.o_proj.input
        out = attn.output[0]
        loss = lm.output.logits[0, -1, she]
        with loss.backward():
            g_out = out.grad.save()
            g_in = o_in.grad.save()
    with stories.trace(PROMPT):
        out = stories.model.layers[2].self_attn.output  # an array in mlx-lm's own tree
        loss = stories.output[0, -1, she]
        with loss.backward():
            expected = out.grad.save()
    np.testing.assert_allclose(np.array(g_out), np.array(expected), rtol=1e-4, atol=1e-5)
    assert float(np.abs(np.array(g_out)).max()) > 1e-3
    w = np.array(lm.model.layers[2].self_attn.o_proj.weight)
    np.testing.assert_allclose(np.array(g_in), np.array(g_out) @ w, rtol=1e-4, atol=1e-6)
