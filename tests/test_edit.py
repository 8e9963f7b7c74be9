"""Persistent edits, checked against an eager forward with the same edit."""

import mlx.core as mx
import pytest

from reference import llama_forward, token_ids


def test_edit_on_a_copy_leaves_the_model_clean(stories, prompt):
    ids = token_ids(stories, prompt)
    _, _, ref_edited = llama_forward(stories.mlx_model, ids, lambda i, h: h * 0.5 if i == 1 else h)
    _, _, ref_plain = llama_forward(stories.mlx_model, ids)
    with stories.edit() as (tracer, edited):
        edited.model.layers[1].output = edited.model.layers[1].output * 0.5
    with edited.trace(prompt):
        seen = edited.model.layers[1].output.save()
        out_edited = edited.output.save()
    with stories.trace(prompt):
        out_plain = stories.output.save()
    assert mx.allclose(out_edited, ref_edited, atol=1e-5)
    assert mx.array_equal(out_plain, ref_plain)
    _, outs, _ = llama_forward(stories.mlx_model, ids)
    assert mx.allclose(seen, outs[1] * 0.5)


def test_inplace_edits_stack_apply_to_invokes_and_clear(stories, prompt):
    ids = token_ids(stories, prompt)

    def both(i, h):
        if i == 0:
            h = mx.array(h)
            h[:, :, :8] = 0
        return h * 2 if i == 3 else h

    _, _, ref = llama_forward(stories.mlx_model, ids, both)
    try:
        with stories.edit(inplace=True):
            stories.model.layers[0].output[:, :, :8] = 0
        with stories.edit(inplace=True):
            stories.model.layers[3].output = stories.model.layers[3].output * 2
        with stories.trace(prompt):
            out = stories.output.save()
        assert mx.allclose(out, ref, atol=1e-4)
        with stories.trace() as tracer:
            with tracer.invoke(prompt):
                first = stories.output.save()
            with tracer.invoke("Tom went"):
                pass
        assert mx.allclose(first, ref, atol=1e-4)
    finally:
        stories.clear_edits()
    with stories.trace(prompt):
        clean = stories.output.save()
    assert mx.array_equal(clean, llama_forward(stories.mlx_model, ids)[2])


def test_edit_on_unknown_path_is_a_clear_error_at_the_next_trace(stories, prompt):
    # nnsight stores an edit's body unrun and runs it in each later trace (nnsight's
    # docs/usage/edit.md edits `h[9]` of a 6-layer model and `.adapter`s it never adds without error
    # at the edit): the error is the edited model's, raised by every trace of it, never by `stories`.
    with stories.edit() as (tracer, edited):
        edited.model.layerz[0].output[:] = 0
        reached = True
    assert "reached" not in locals()  # the body stopped at its failing line
    assert len(edited._edits) == 1 and not stories._edits
    for _ in range(2):
        with pytest.raises(AttributeError, match="did you mean"):
            with edited.trace(prompt):
                edited.output.save()
    with stories.trace(prompt):
        out = stories.output.save()
    assert out.shape[0] == 1
    edited.clear_edits()
    with edited.trace(prompt):
        again = edited.output.save()
    assert mx.array_equal(again, out)


def test_a_failed_edit_keeps_what_with_as_bound(stories, prompt):
    """``with model.edit() as new_model:`` binds the pair (tracer, edited model), as nnsight 0.8.1
    does (its published 0.5-changes notebook then calls ``new_model.lm_head`` on the pair): the body
    fails, the edit stores the error, and ``new_model`` stays bound, so the script's next line fails
    as on nnsight (``AttributeError`` on a tuple), not with a ``NameError``."""
    with stories.edit() as new_model:
        new_model.lm_head.output[:] = 0
    assert isinstance(new_model, tuple) and len(new_model) == 2
    with pytest.raises(AttributeError, match="'tuple' object has no attribute 'trace'"):
        new_model.trace(prompt)
    assert not stories._edits
