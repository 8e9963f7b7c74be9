"""Bad input gets a clear error at the user's line, and the model is left exactly as it was."""

import inspect

import mlx.core as mx
import mlx.nn as nn
import pytest
from mlx.utils import tree_flatten

import mlxsight


def snapshot(lm):
    classes = {path: type(m) for path, m in lm.mlx_model.named_modules()}
    params = {k: mx.array(v) for k, v in tree_flatten(lm.mlx_model.parameters())}
    return classes, params


def assert_unchanged(lm, before, prompt):
    classes, params = before
    assert {p: type(m) for p, m in lm.mlx_model.named_modules()} == classes
    for k, v in tree_flatten(lm.mlx_model.parameters()):
        assert mx.array_equal(v, params[k]), k
    ids = mx.array([lm.tokenizer(prompt)["input_ids"]])
    with lm.trace(prompt):
        out = lm.output.save()
    assert mx.array_equal(out, lm.mlx_model(ids))


def line_of(fn, marker):
    src = inspect.getsource(fn).splitlines()
    return fn.__code__.co_firstlineno + next(i for i, l in enumerate(src) if marker in l)


def test_unknown_path_suggests_close_names(stories, prompt):
    with pytest.raises(AttributeError, match="did you mean 'layers'"):
        stories.model.layer  # noqa: B018
    with pytest.raises(AttributeError, match="self_attn"):
        stories.model.layers[0].self_atn  # noqa: B018


def test_index_out_of_range(stories):
    with pytest.raises(IndexError, match="has 5 modules; index 7"):
        stories.model.layers[7]  # noqa: B018
    assert stories.model.layers[-1].path == "model.model.layers.4"


def test_shape_mismatch_names_module_and_both_shapes(stories, prompt):
    before = snapshot(stories)
    with pytest.raises(mlxsight.TraceError) as info:
        with stories.trace(prompt):
            stories.model.layers[1].output = mx.zeros((1, 3, 64))  # bad-shape
    msg = str(info.value)
    T = len(stories.tokenizer(prompt)["input_ids"])
    assert "model.model.layers.1.output" in msg and "(1, 3, 64)" in msg and f"(1, {T}, 64)" in msg
    assert f"line {line_of(test_shape_mismatch_names_module_and_both_shapes, 'bad-shape')}" in msg
    with pytest.raises(mlxsight.TraceError, match=r"shape \(7,\) into model.model.layers.1.output\[:, -1\] \(shape \(1, 64\)\)"):
        with stories.trace(prompt):
            stories.model.layers[1].output[:, -1] = mx.zeros((7,))
    assert_unchanged(stories, before, prompt)


def test_time_travel_is_rejected_with_both_lines(stories, prompt):
    before = snapshot(stories)
    with pytest.raises(mlxsight.OutOfOrderError) as info:
        with stories.trace(prompt):
            late = stories.model.layers[3].output  # late-read
            stories.model.layers[1].output = late  # early-write
    msg = str(info.value)
    fn = test_time_travel_is_rejected_with_both_lines
    assert f"line {line_of(fn, 'early-write')}" in msg and f"line {line_of(fn, 'late-read')}" in msg
    assert "test_errors.py" in msg
    assert_unchanged(stories, before, prompt)


def test_edit_of_materialised_value_is_rejected(stories, prompt):
    # nnsight's order rule catches it first: layer 1 comes before layer 3 in the forward
    with pytest.raises(mlxsight.OutOfOrderError, match="ran past it|concrete Python value"):
        with stories.trace(prompt):
            v = stories.model.layers[3].output.sum().item()
            stories.model.layers[1].output[:] = v


def test_proxy_after_trace(stories, prompt):
    class Box:
        pass

    box = Box()
    with stories.trace(prompt):
        box.h = stories.model.layers[0].output  # escapes the trace without being saved
    with pytest.raises(mlxsight.ExpiredProxyError, match="finished"):
        box.h + 1  # noqa: B018


def test_nested_trace(stories, prompt):
    with pytest.raises(mlxsight.NestedTraceError):
        with stories.trace(prompt):
            with stories.trace(prompt):
                pass


def test_exception_in_block_propagates_unchanged(stories, prompt):
    before = snapshot(stories)
    with pytest.raises(KeyError, match="boom"):
        with stories.trace(prompt):
            stories.model.layers[0].output[:] = 0
            raise KeyError("boom")
    assert_unchanged(stories, before, prompt)


def test_failure_while_running_restores_model(stories, prompt):
    before = snapshot(stories)
    with pytest.raises(mlxsight.TraceError, match="boom in user function"):
        with stories.trace(prompt):
            h = stories.model.layers[2].output
            mlxsight.apply(lambda x: x, h)  # fine while recording: placeholders only
            stories.model.layers[2].output = mlxsight.apply(_explode_on_real_values, h)
            out = stories.output.save()
    assert_unchanged(stories, before, prompt)


def _explode_on_real_values(x):
    # Recording runs functions on never-evaluated placeholders; only the real run evaluates.
    if float(mx.abs(x).sum()) != 0:
        raise RuntimeError("boom in user function")
    return x


def test_module_never_called(prompt):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Linear(4, 4)
            self.unused = nn.Linear(4, 4)

        def __call__(self, x):
            return self.used(x)

    net = mlxsight.NNsight(Net())
    with pytest.raises(mlxsight.ModuleNotCalledError, match="model.unused is never called"):
        with net.trace(mx.ones((1, 4))):
            net.unused.output.save()


def test_outside_trace_access(stories):
    with pytest.raises(ValueError, match="outside of interleaving"):
        stories.model.layers[0].output  # noqa: B018


def test_a_failed_trace_leaves_the_callers_variables_as_they_were(stories, prompt):
    # nnsight pushes nothing back from a block that fails (its docs/usage/cache.md reads an earlier
    # trace's cache after a trace that raised, in the same notebook)
    cache = "before"
    with pytest.raises(IndexError):
        with stories.trace(prompt) as tracer:
            cache = tracer.cache()
            fresh = stories.model.layers[0].output  # noqa: F841
            stories.model.layers[99].output  # noqa: B018
    assert cache == "before" and "fresh" not in locals()
    assert isinstance(tracer, mlxsight.Tracer)  # what `as` bound stays
