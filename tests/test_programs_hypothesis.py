"""Random intervention programs against an eager reference (issue 10).

A program is a list of steps per invoke: reads saved as aliases, scalar writes through slices,
in-place ops on views and on saved aliases, and values carried from an earlier layer into a later
one; several invokes of different lengths; stepped and negative slices. The same program runs
inside ``stories.trace`` and, as the reference, on numpy arrays inside a hand-run MLX forward
(``reference.llama_forward``): numpy's basic indexing makes views exactly as torch does, so an
in-place edit of a saved alias reaches its layer's output there as it must here. A program that
indexes past a dimension or writes a later layer's value into an earlier layer must be rejected
with ``IndexError`` or ``OutOfOrderError``; after any program the model must still give its plain
forward.
"""

from __future__ import annotations

import operator
import os

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

import mlxsight

from reference import llama_forward, token_ids

PROMPTS = ["Lily", "Tom and Sue went", "Once upon a time there was a big dog",
           "One day, a little girl named Lily found a needle in her room."]
LAYERS, WIDTH = 5, 64
OPS = {"add": operator.iadd, "mul": operator.imul, "sub": operator.isub}
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


# -- programs --------------------------------------------------------------------------------------

def _dim_keys():
    bound = st.one_of(st.none(), st.integers(-WIDTH - 4, WIDTH + 4))
    step = st.one_of(st.none(), st.sampled_from([1, 2, 3, 5, -1, -2, -7]))
    return st.one_of(st.integers(-WIDTH, WIDTH - 1), st.builds(slice, bound, bound, step))


def _seq_keys(shortest: int, free: bool, length: int):
    """Keys on the sequence dimension. With several invokes rows are left-padded to one length, so
    a key there counts from the end (where every row's real tokens are); alone, anything goes,
    out-of-range ints included."""
    if free:
        bound = st.one_of(st.none(), st.integers(-length - 3, length + 3))
        step = st.one_of(st.none(), st.sampled_from([1, 2, -1, -3]))
        inside = st.integers(-length, length - 1)
        return st.one_of(inside, inside, st.builds(slice, bound, bound, step), st.integers(-length - 3, length + 2))
    end = st.integers(-shortest, -1)
    forward = st.builds(slice, end, st.one_of(st.none(), end), st.sampled_from([None, 1, 2]))
    backward = st.builds(slice, end, st.integers(-shortest - 1, -1), st.sampled_from([-1, -2]))
    return st.one_of(end, forward, backward)


@st.composite
def invoke_programs(draw, shortest: int, free: bool, length: int):
    """One invoke's steps, in forward order of layers (nnsight's access order)."""
    layers = sorted(draw(st.lists(st.integers(0, LAYERS - 1), min_size=1, max_size=7)))
    steps: list = []
    for layer in layers:
        kind = draw(st.sampled_from(["save", "save_row", "set", "iop", "alias_iop", "carry"]))
        key = (slice(None), draw(_seq_keys(shortest, free, length)), draw(_dim_keys()))
        if draw(st.booleans()):  # other key forms; `...` spans the padded length, so only alone
            key = draw(st.sampled_from([(0, key[1]), key[:2]] + [(Ellipsis, key[2])] * free))
        c = draw(st.sampled_from([-1.5, 0.0, 0.5, 2.0]))
        op = draw(st.sampled_from(sorted(OPS)))
        aliases = [i for i, s in enumerate(steps) if s[0] in ("save", "save_row") and s[1] == layer]
        rows = [i for i, s in enumerate(steps) if s[0] == "save_row" and s[1] < layer]
        position = draw(st.integers(-shortest, -1))  # where every invoke has a real token
        if kind == "alias_iop" and aliases:
            steps.append(("alias_iop", layer, draw(st.sampled_from(aliases)), op, c))
        elif kind == "carry" and rows:
            steps.append(("carry", layer, (slice(None), position), draw(st.sampled_from(rows)), c))
        elif kind in ("set", "iop"):
            steps.append((kind, layer, key, op, c))
        elif kind == "save_row":
            steps.append(("save_row", layer, (slice(None), position), None, c))
        else:
            steps.append(("save", layer, key, None, c))
    if draw(st.integers(0, 7)) == 0 and steps[-1][1] > 0:  # now and then, time travel
        late = steps[-1][1]
        steps.append(("carry_back", draw(st.integers(0, late - 1)), (slice(None), -1), late, 1.0))
    return steps


@st.composite
def programs(draw):
    n = draw(st.integers(1, 3))
    texts = draw(st.lists(st.sampled_from(PROMPTS), min_size=n, max_size=n))
    lengths = [len(_tok(t)) for t in texts]
    free = len(texts) == 1
    return [(t, draw(invoke_programs(min(lengths), free, max(lengths)))) for t in texts]


_TOKENIZER = None


def _tok(text):
    return _TOKENIZER(text)["input_ids"]


# -- the two interpreters -------------------------------------------------------------------------

def run_steps(steps, out_of, saved):
    """Run ``steps`` on values from ``out_of(layer)`` (proxies, or numpy arrays). ``saved`` gets one
    entry per step (the alias a read made, or None)."""
    for kind, layer, key, arg, c in steps:
        value = None
        if kind in ("save", "save_row"):
            value = out_of(layer)[key]
        elif kind == "set":
            out_of(layer)[key] = c
        elif kind == "iop":
            view = out_of(layer)[key]
            OPS[arg](view, c)  # an in-place op on a view edits the layer's output
        elif kind == "alias_iop":
            OPS[arg](saved[key], c)  # key: the saved alias's step
        elif kind == "carry":
            out_of(layer)[key] = saved[arg] * c
        elif kind == "carry_back":
            out_of(layer)[key] = out_of(arg)[key]
        saved.append(value)


def traced(lm, program):
    saved: list = []
    with lm.trace() as tracer:
        for text, steps in program:
            with tracer.invoke(text):
                mine: list = []
                run_steps(steps, lambda layer: lm.model.layers[layer].output, mine)
                # one append per body, after its last request: bodies run interleaved in forward
                # order (as nnsight's workers), so appends made earlier in a body would interleave
                saved.append(([s.save() if s is not None else None for s in mine], lm.output.save()))
    return saved


def eager(lm, text, steps):
    """The reference: numpy views on each layer's output inside a hand-run forward."""
    saved: list = []
    arrays: dict[int, np.ndarray] = {}
    by_layer: dict[int, list] = {}
    for i, step in enumerate(steps):
        by_layer.setdefault(step[1], []).append(i)

    def out_of(layer):
        return arrays[layer]

    def edit(layer, h):
        if layer not in by_layer:
            return h
        arrays[layer] = np.array(h, copy=True)
        for i in by_layer[layer]:
            while len(saved) < i:
                saved.append(None)
            run_steps([steps[i]], out_of, saved)
        return mx.array(arrays[layer])

    *_, logits = llama_forward(lm.mlx_model, token_ids(lm, text), edit)
    saved += [None] * (len(steps) - len(saved))
    return saved, np.array(logits)


def expected_error(lm, program):
    """The error a program must be rejected with, or None: numpy's IndexError for an index past a
    dimension (the reference runs without time travel), else OutOfOrderError for time travel."""
    for text, steps in program:
        try:
            eager(lm, text, [s for s in steps if s[0] != "carry_back"])
        except IndexError:
            return IndexError
    if any(s[0] == "carry_back" for _, steps in program for s in steps):
        return mlxsight.OutOfOrderError
    return None


# -- the test --------------------------------------------------------------------------------------

def check_program(lm, program):
    error = expected_error(lm, program)
    event(f"{len(program)} invoke(s); " + (f"rejected with {error.__name__}" if error else "equal to the reference"))
    if error is not None:
        with pytest.raises(error):
            traced(lm, program)
    else:
        got = traced(lm, program)
        width = max(len(_tok(t)) for t, _ in program)
        for (text, steps), (mine, logits) in zip(program, got):
            ref_saved, ref_logits = eager(lm, text, steps)
            n = len(_tok(text))
            np.testing.assert_allclose(np.array(logits)[:, width - n:], ref_logits, rtol=1e-4, atol=1e-4)
            for step, a, b in zip(steps, mine, ref_saved):
                if b is None:
                    continue
                assert a.shape == b.shape, step
                np.testing.assert_allclose(np.array(a), b, rtol=1e-4, atol=1e-4, err_msg=str(step))
    # Whatever happened, the model still gives its plain forward.
    ids = token_ids(lm, PROMPTS[1])
    with lm.trace(PROMPTS[1]):
        out = lm.output.save()
    assert mx.array_equal(out, lm.mlx_model(ids))


@pytest.fixture(scope="module", autouse=True)
def _tokenizer(stories):
    global _TOKENIZER
    _TOKENIZER = stories.tokenizer


@settings(max_examples=40, **SETTINGS)
@given(program=programs())
def test_random_programs_equal_the_eager_reference_or_are_rejected(stories, program):
    check_program(stories, program)


@pytest.mark.slow
@settings(max_examples=int(os.environ.get("MLXSIGHT_PROGRAM_EXAMPLES", "600")), **SETTINGS)
@given(program=programs())
def test_random_programs_long(stories, program):
    check_program(stories, program)


def test_the_reference_makes_views_like_torch():
    a = np.arange(12.0).reshape(1, 3, 4)
    alias = a[:, ::-2, 1:3]
    alias *= 10  # numpy's in-place op on a view writes through, as torch's does
    assert a[0, 2, 1] == 90 and a[0, 1, 1] == 5
