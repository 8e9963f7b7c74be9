"""Issue 10: bad inputs and out-of-range indices fail clearly, before anything runs, and leave the
model and the process as they were (never a crash, never garbage logits)."""

import inspect

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

import mlxsight
from mlxsight.errors import IndexOutOfRangeError

PROMPT = "Once upon a time, there was a little girl"


def _params(lm):
    return {k: mx.array(v) for k, v in tree_flatten(lm.mlx_model.parameters())}


def _clean_afterwards(lm, params):
    """Parameters bitwise unchanged, and a trace afterwards equals a plain forward."""
    for k, v in tree_flatten(lm.mlx_model.parameters()):
        assert mx.array_equal(v, params[k]), k
    ids = mx.array([lm.tokenizer(PROMPT)["input_ids"]])
    with lm.trace(PROMPT):
        out = lm.output.save()
    assert mx.array_equal(out, lm.mlx_model(ids))


def _line_of(fn, marker):
    src = inspect.getsource(fn).splitlines()
    return fn.__code__.co_firstlineno + next(i for i, line in enumerate(src) if marker in line)


# -- token ids (item 2) ---------------------------------------------------------------------------

BAD_IDS = [
    ([[5, 600]], ValueError, "out of range for this model's vocabulary of 512"),
    ([[5, 512]], ValueError, "token id 512 is out of range"),
    ([[5, -1]], ValueError, "token id -1 is negative"),
    ([[5, 2**31 - 1]], ValueError, "out of range"),  # used to kill the process (SIGSEGV)
    ([[5, 2**40]], ValueError, "out of range"),
    ([5, 600], ValueError, "out of range"),
    (mx.array([[5, 600]]), ValueError, "out of range"),
    (mx.array([[5, -3]]), ValueError, "negative"),
    (mx.array([[5, 2**40]], dtype=mx.int64), ValueError, "out of range"),  # would wrap to a valid int32
    (np.array([[5, 600]]), ValueError, "out of range"),
    ({"input_ids": [[5, 600]]}, ValueError, "out of range"),
    (mx.array([[5.0, 6.0]]), TypeError, "must be integers; got an array of float32"),
    (np.array([[5.0, 6.0]]), TypeError, "must be integers"),
    (mx.array([[True, False]]), TypeError, "must be integers"),
    ([[5, 6.5]], TypeError, "must be integers; got float"),
    ([5.0, 6.0], TypeError, "must be integers"),
    ([[5, True]], TypeError, "must be integers; got bool"),
    (mx.zeros((1, 1, 3), dtype=mx.int32), ValueError, r"\[rows, tokens\] array; got shape \(1, 1, 3\)"),
]


@pytest.mark.parametrize("ids,error,message", BAD_IDS, ids=[repr(b[0])[:30] for b in BAD_IDS])
def test_bad_token_ids_are_rejected_before_anything_runs(stories, ids, error, message):
    params = _params(stories)
    with pytest.raises(error, match=message):
        with stories.trace(ids):
            stories.output.save()
    _clean_afterwards(stories, params)


def test_bad_ids_are_rejected_by_every_entry_point(stories):
    with pytest.raises(ValueError, match="out of range"):
        stories.trace([[5, 600]], trace=False)
    with pytest.raises(ValueError, match="out of range"):
        stories.generate([[5, 600]], max_new_tokens=2)
    with pytest.raises(ValueError, match="out of range"):
        with stories.trace() as tracer:
            with tracer.invoke([[1, 2, 3]]):
                pass
            with tracer.invoke([[5, 600]]):
                pass


def test_torch_ids_and_the_hf_view_are_checked_too(stories_path):
    import torch

    hf = mlxsight.LanguageModel(stories_path)  # transformers' module tree over the same weights
    with pytest.raises(ValueError, match="vocabulary of 512"):
        with hf.trace(torch.tensor([[5, 600]])):
            hf.output.save()
    with pytest.raises(TypeError, match="must be integers; got an array of torch.float32"):
        with hf.trace(torch.tensor([[5.0, 6.0]])):
            hf.output.save()
    with hf.trace(torch.tensor([[1, 5, 17]])):
        logits = hf.output.logits.save()
    assert mx.allclose(logits, hf.mlx_model(mx.array([[1, 5, 17]])), atol=1e-4)  # the HF view computes in its own order


def test_valid_ids_in_every_form_give_the_plain_forward(stories):
    ids = [1, 5, 17, 511, 0]
    expected = stories.mlx_model(mx.array([ids]))
    for form in ([ids], ids, tuple(ids), mx.array([ids]), mx.array(ids), mx.array([ids], dtype=mx.uint32),
                 np.array([ids]), [np.int64(i) for i in ids], {"input_ids": [ids], "attention_mask": [[1] * 5]}):
        with stories.trace(form):
            out = stories.output.save()
        assert mx.array_equal(out, expected), type(form)


# -- other bad inputs (item 7) ------------------------------------------------------------------

BAD_INPUTS = [
    (None, TypeError, "cannot use NoneType None as a language-model input: give text"),
    (1.5, TypeError, "cannot use float 1.5 as a language-model input"),
    ([], ValueError, "the input is an empty list"),
    ({"foo": 1}, ValueError, r"an input dict needs 'input_ids' \(a tokenizer's output\); got keys \['foo'\]"),
    ([{"role": "user", "content": "hi"}], ValueError, "chat-message input needs a tokenizer with a chat template"),
    (mx.zeros((1, 0), dtype=mx.int32), ValueError, "zero tokens"),
    (mx.zeros((0, 4), dtype=mx.int32), ValueError, "no rows"),
    ([[]], ValueError, "zero tokens"),
    ({"input_ids": [[1, 2]], "attention_mask": [[1]]}, ValueError, "attention_mask' must have the shape"),
]


@pytest.mark.parametrize("value,error,message", BAD_INPUTS, ids=[repr(b[0])[:30] for b in BAD_INPUTS])
def test_bad_inputs_give_clear_errors(stories, value, error, message):
    params = _params(stories)
    with pytest.raises(error, match=message):
        with stories.trace(value):
            stories.output.save()
    _clean_afterwards(stories, params)


# -- out-of-range indexing (item 3) -------------------------------------------------------------

def _T(lm):
    return len(lm.tokenizer(PROMPT)["input_ids"])


@pytest.mark.parametrize("key", [(slice(None), 100), (slice(None), -100), (0, 0, 64), (1,), (-2,),
                                 (slice(None), slice(None), -65), (Ellipsis, 64)])
def test_out_of_range_reads_raise_index_error_at_the_users_line(stories, key):
    def body():
        with stories.trace(PROMPT):
            stories.model.layers[0].output[key].save()  # oob-read

    with pytest.raises(IndexError, match="is out of bounds for dimension") as info:
        body()
    assert isinstance(info.value, IndexOutOfRangeError)
    assert f"line {_line_of(body, 'oob-read')}" in str(info.value)


@pytest.mark.parametrize("key", [(slice(None), 100), (slice(None), -100), (0, 0, 64), (Ellipsis, -65)])
def test_out_of_range_writes_raise_index_error_instead_of_being_dropped(stories, key):
    params = _params(stories)

    def body():
        with stories.trace(PROMPT):
            stories.model.layers[0].output[key] = 0  # oob-write
            stories.output.save()

    with pytest.raises(IndexError, match="is out of bounds") as info:
        body()
    assert f"line {_line_of(body, 'oob-write')}" in str(info.value)
    _clean_afterwards(stories, params)


def test_too_many_indices_and_bad_masks(stories):
    with pytest.raises(IndexError, match="too many indices for tensor of dimension 3"):
        with stories.trace(PROMPT):
            stories.model.layers[0].output[0, 0, 0, 0].save()
    with pytest.raises(IndexError, match="single ellipsis"):
        with stories.trace(PROMPT):
            stories.model.layers[0].output[..., 0, ...].save()
    with pytest.raises(IndexError, match="shape of the mask"):
        with stories.trace(PROMPT):
            stories.model.layers[0].output[0, mx.array([True, False])].save()
    with pytest.raises(ValueError, match="slice step cannot be zero"):
        with stories.trace(PROMPT):
            stories.model.layers[0].output[:, ::0].save()


def test_out_of_range_index_arrays_are_rejected(stories):
    T = _T(stories)
    for key in ((0, mx.array([1, T])), (0, [0, -T - 1]), (0, np.array([T + 5]))):
        with pytest.raises(IndexError, match="out of bounds for dimension 1"):
            with stories.trace(PROMPT):
                stories.model.layers[0].output[key].save()
        with pytest.raises(IndexError, match="out of bounds for dimension 1"):
            with stories.trace(PROMPT):
                stories.model.layers[0].output[key] = 0


def test_edge_indices_and_slices_still_work_like_numpy(stories):
    T = _T(stories)
    with stories.trace(PROMPT):
        h = stories.model.layers[0].output.save()
        a = stories.model.layers[0].output[:, T - 1].save()
        b = stories.model.layers[0].output[:, -T].save()
        c = stories.model.layers[0].output[:, 100:].save()  # a slice past the end is empty, as in torch
        d = stories.model.layers[0].output[:, ::-3, 1:60:7].save()
        e = stories.model.layers[0].output[0, mx.array([0, T - 1, -1])].save()
    ref = np.array(h)
    np.testing.assert_array_equal(np.array(a), ref[:, T - 1])
    np.testing.assert_array_equal(np.array(b), ref[:, 0])
    assert c.shape == (1, 0, 64)
    np.testing.assert_array_equal(np.array(d), ref[:, ::-3, 1:60:7])
    np.testing.assert_array_equal(np.array(e), ref[0, [0, T - 1, -1]])


@pytest.mark.parametrize("dim,start,length", [(1, 100, 1), (1, 4, 3), (1, -7, 1), (2, 0, 6), (0, 2, 0), (-1, -2, 2),
                                              (1, 5, 0), (1, 0, -1)])
def test_narrow_checks_bounds_like_torch(dim, start, length):
    import torch

    from mlxsight import torch_ops

    x = np.arange(30, dtype=np.float32).reshape(2, 5, 3)
    try:
        expected = torch.narrow(torch.from_numpy(x), dim, start, length).numpy()
    except (IndexError, RuntimeError) as e:
        with pytest.raises(type(e)):
            torch_ops.narrow(mx.array(x), dim, start, length)
    else:
        np.testing.assert_array_equal(np.array(torch_ops.narrow(mx.array(x), dim, start, length)), expected)


def test_edits_index_by_the_traced_input_not_the_recording_example(stories):
    """An edit is recorded on a short example input; its indices are checked when a trace runs it."""
    T = _T(stories)
    with stories.edit() as (_, edited):
        edited.model.layers[1].output[:, T - 2] = 0  # past the example's length, inside the real one
        edited.model.layers[2].output[:, T - 1] *= 0
    with edited.trace(PROMPT):
        a = edited.model.layers[1].output.save()
        b = edited.model.layers[2].output.save()
    assert float(mx.abs(a[:, T - 2]).max()) == 0 and float(mx.abs(a[:, T - 3]).max()) > 0
    assert float(mx.abs(b[:, T - 1]).max()) == 0

    def body():
        with stories.edit() as (_, too_far):
            too_far.model.layers[1].output[:, 100] = 0  # edit-line
        with too_far.trace(PROMPT):
            out = too_far.output.save()
        return out

    with pytest.raises(IndexError, match="out of bounds for dimension 1 with size") as info:
        body()
    assert f"line {_line_of(body, 'edit-line')}" in str(info.value)
    _clean_afterwards(stories, _params(stories))


def test_negative_steps_follow_torch_under_torch_semantics(stories):
    """MLX and numpy take negative steps; torch refuses them, so an nnsight script must fail here too."""
    mlxsight.set_torch_semantics(True)
    try:
        for use in (lambda h: h[:, ::-1].save(), lambda h: h.__setitem__((slice(None), slice(None, None, -2)), 0)):
            with pytest.raises(ValueError, match="step must be greater than zero"):
                with stories.trace(PROMPT):
                    use(stories.model.layers[0].output)
        with stories.trace(PROMPT):
            ok = stories.model.layers[0].output[:, 1::2].save()
        assert ok.shape[1] == _T(stories) // 2
    finally:
        mlxsight.set_torch_semantics(False)
