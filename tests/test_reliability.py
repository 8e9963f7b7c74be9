"""No input, interrupt or thread leaves the process or the model changed (issue 10, items 1, 5, 6).

After every failure the full clean-state check runs: every parameter bitwise unchanged, plain and
traced logits identical to those before, no module's class left swapped, no trace, session or hook
observer left open. The reference for the values is the plain MLX forward of the same module.
"""

from __future__ import annotations

import threading
import time
import warnings

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

import mlxsight
from mlxsight import context, frames, graph, hooks, runner, structure
from reference import token_ids

PROMPT = "Once upon a time there was a little girl"


@pytest.fixture(scope="module")
def lm(stories_path):
    """A model of this module's own: failures here must not be able to reach other tests' model."""
    return mlxsight.LanguageModel(stories_path, view="mlx")


@pytest.fixture(scope="module")
def baseline(lm):
    ids = token_ids(lm, PROMPT)
    params = {k: np.array(v) for k, v in tree_flatten(lm.mlx_model.parameters())}
    logits = lm.mlx_model(ids)
    mx.eval(logits)
    return ids, params, np.array(logits)


def assert_clean(lm, baseline) -> None:
    """The full clean-state check."""
    ids, params, logits = baseline
    assert context.current_tracer() is None, "a trace was left open"
    assert context.current_session() is None, "a session was left open"
    assert hooks.active() is None, "a hook observer was left active"
    swapped = [type(m).__name__ for m in lm.mlx_model.modules() if hasattr(type(m), "_mlxsight_original_class")]
    assert swapped == [], f"module classes left swapped: {swapped}"
    now = dict(tree_flatten(lm.mlx_model.parameters()))
    assert now.keys() == params.keys()
    for key, value in params.items():
        assert np.array_equal(np.array(now[key]), value), f"parameter {key} changed"
    assert lm._edits == []
    plain = lm.mlx_model(ids)
    with lm.trace(ids):
        traced = lm.output.save()
    assert np.array_equal(np.array(plain), logits)
    assert np.array_equal(np.array(traced), logits)


# -- item 1: a failed model.trace(...) never poisons later traces ------------------------------
BAD_INPUTS = [None, 1.5, [], {"junk": 1}, [{"role": "user", "content": "hi"}], object()]


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=[type(b).__name__ + str(i) for i, b in enumerate(BAD_INPUTS)])
def test_a_bad_input_fails_alone(lm, baseline, bad):
    with pytest.raises(Exception) as info:
        with lm.trace(bad):
            lm.output.save()
    assert not isinstance(info.value, mlxsight.NestedTraceError)
    assert_clean(lm, baseline)
    with pytest.raises(Exception) as info:  # the same through an invoke
        with lm.trace() as tracer:
            with tracer.invoke(bad):
                lm.output.save()
    assert not isinstance(info.value, mlxsight.NestedTraceError)
    assert_clean(lm, baseline)


def test_an_interrupt_while_encoding_fails_alone(lm, baseline, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(type(lm._driver), "encode", interrupted)
    with pytest.raises(KeyboardInterrupt):
        with lm.trace(PROMPT):
            pass
    monkeypatch.undo()
    assert_clean(lm, baseline)


# -- item 5: an exception or interrupt at any step of the lifecycle ----------------------------
class Injected(Exception):
    pass


class FaultAt:
    """Wraps ``owner.name`` so that its ``n``-th call raises ``error`` (and counts calls)."""

    def __init__(self, owner, name: str, n: int, error: type[BaseException]) -> None:
        self.owner, self.name, self.n, self.error = owner, name, n, error
        self.original = owner.__dict__[name]
        self.calls = 0
        fault = self

        def wrapper(*args, **kwargs):
            fault.calls += 1
            if fault.calls == fault.n:
                raise fault.error(f"injected at call {fault.n} of {name}")
            return fault.original(*args, **kwargs)

        self.wrapper = staticmethod(wrapper) if isinstance(self.original, staticmethod) else wrapper

    def __enter__(self) -> "FaultAt":
        setattr(self.owner, self.name, self.wrapper)
        return self

    def __exit__(self, *exc) -> None:
        setattr(self.owner, self.name, self.original)


# Each step of a trace's life, and a function called there (module attribute or method).
def _stages(lm):
    return {
        "enter": (frames.FrameSnapshot, "__init__"),
        "encode": (type(lm._driver), "encode"),
        "record": (graph.Graph, "create"),
        "compile": (mlxsight.compiler.Compiler, "compile"),
        "hook": (hooks, "_hooked_subclass"),
        "forward": (runner.Runner, "visit"),
        "structure": (structure.StructureRecorder, "visit"),
        "push": (frames.FrameSnapshot, "push"),
        "exit": (context, "notify_exit"),
    }


def _trace(lm):
    with lm.trace(PROMPT):
        lm.model.layers[1].output[:, -1] = 0
        h = lm.model.layers[2].output.save()
        out = lm.output.save()
    return h, out


def _generate(lm):
    with lm.generate(PROMPT, max_new_tokens=3) as tracer:
        for _ in tracer.iter[0:3]:
            lm.model.layers[0].output = lm.model.layers[0].output * 0.5
        ids = tracer.result.save()
    return ids


def _edit(lm):
    with lm.edit() as (_, edited):
        edited.model.layers[1].output = edited.model.layers[1].output * 0.5
    with edited.trace(PROMPT):
        out = edited.output.save()
    return out


def _session(lm):
    with lm.session():
        with lm.trace(PROMPT):
            h = lm.model.layers[1].output
        with lm.trace(PROMPT):
            lm.model.layers[1].output = h * 2
            out = lm.output.save()
    return out


def _source(lm):
    with lm.trace(PROMPT):
        src = lm.model.layers[0].mlp.source
        src.swiglu_0.output = src.swiglu_0.output * 0.5
        out = lm.output.save()
    return out


BLOCKS = {"trace": _trace, "generate": _generate, "edit": _edit, "session": _session, "source": _source}


def _fault_points(calls: int) -> list[int]:
    """Which calls to fail: all of few, else the first three, two in the middle and the last."""
    if calls <= 6:
        return list(range(1, calls + 1))
    return sorted({1, 2, 3, calls // 3, 2 * calls // 3, calls})


@pytest.mark.parametrize("block", list(BLOCKS))
def test_faults_at_every_step_leave_everything_clean(lm, baseline, block):
    run = BLOCKS[block]
    reference = run(lm)
    stages = _stages(lm)
    injected = 0
    for stage, (owner, name) in stages.items():
        lm._driver.forget()  # structures are learned anew in each run: that step is interrupted too
        with FaultAt(owner, name, 0, Injected) as counter:  # n=0 never fires: counts the calls
            run(lm)
        assert counter.calls > 0 or stage == "push" and block == "session", stage
        for n in _fault_points(counter.calls):
            for error in (Injected, KeyboardInterrupt):
                lm._driver.forget()
                with FaultAt(owner, name, n, error) as fault:
                    try:
                        run(lm)
                    except error:
                        injected += 1
                    except mlxsight.TraceError as e:  # an error inside the run, reported at its node
                        assert isinstance(e.__cause__, Injected) and error is Injected
                        injected += 1
                    assert fault.calls >= n
                assert_clean(lm, baseline)
        assert stage and run(lm) is not None
    again = run(lm)
    assert np.array_equal(np.array(_first(again)), np.array(_first(reference)))
    assert injected >= 2 * (len(stages) - 1)  # not vacuous: every stage was actually interrupted


def _first(value):
    return value[0] if isinstance(value, tuple) else value


def test_interrupt_inside_the_block_body(lm, baseline):
    for where in range(4):
        try:
            with lm.trace(PROMPT) as tracer:
                h = lm.model.layers[1].output
                if where == 0:
                    raise KeyboardInterrupt
                lm.model.layers[1].output = h * 0
                if where == 1:
                    raise KeyboardInterrupt
                out = lm.output.save()
                if where == 2:
                    int(out[0, 0, 0].argmax())  # a concrete value: runs the model mid-block
                    raise KeyboardInterrupt
                tracer.stop()
        except KeyboardInterrupt:
            pass
        assert_clean(lm, baseline)


def test_a_leaked_class_swap_is_healed_by_the_next_run(lm, baseline):
    """Even a swap left by an interrupt inside the restore itself is undone by the next run that
    hooks that module."""
    layer = lm.mlx_model.model.layers[0]
    cls = type(layer)
    object.__setattr__(layer, "__class__", hooks._hooked_subclass(cls))
    try:
        with lm.trace(PROMPT):
            h = lm.model.layers[0].output.save()
        assert h.shape[0] == 1
    finally:
        leaked = type(layer) is not cls
        object.__setattr__(layer, "__class__", cls)
    assert not leaked
    assert_clean(lm, baseline)


def test_exit_listeners_get_the_saved_values_only(lm):
    """A name the block rebinds to an unsaved value goes back to its value before the block; that
    old value is not one the block pushed (compat compares what listeners get with nnsight's)."""
    seen = []
    mlxsight.add_exit_listener(lambda info, values: seen.append(values))
    try:
        hidden = "earlier"
        with lm.trace(PROMPT):
            hidden = lm.model.layers[-1].output
            tok = hidden[0, -1].argmax(axis=-1).save()
    finally:
        context.settings.exit_listeners.pop()
    assert hidden == "earlier" and list(seen[-1]) == ["tok"] and seen[-1]["tok"] is tok


def test_exit_listeners_can_be_removed():
    seen = []

    def listener(info, values):
        seen.append(info)

    mlxsight.add_exit_listener(listener)
    mlxsight.remove_exit_listener(listener)
    mlxsight.remove_exit_listener(listener)  # a second removal is a no-op
    assert listener not in context.settings.exit_listeners


# -- item 6: threads -------------------------------------------------------------------------
def _patched_run(model, prompt: str, scale: float) -> np.ndarray:
    with model.trace(prompt):
        model.model.layers[1].output = model.model.layers[1].output * scale
        out = model.output.save()
    return np.array(out)


def test_threads_on_different_models_trace_concurrently(stories_path, lm, baseline):
    other = mlxsight.LanguageModel(stories_path, view="mlx")
    prompts = ["Once upon a time", "The dog ran far away", "Lily liked to play"]
    expected = {(i, p): _patched_run(m, p, 0.5 + i) for i, m in enumerate((lm, other)) for p in prompts}
    inside = threading.Barrier(2, timeout=60)
    results: dict = {}
    errors: list = []

    def work(i: int, model) -> None:
        try:
            with model.trace(prompts[0]):  # both threads are inside a trace at the same time
                inside.wait()
                model.model.layers[1].output = model.model.layers[1].output * (0.5 + i)
                first = model.output.save()
            results[(i, prompts[0])] = np.array(first)
            for _ in range(3):
                for p in prompts:
                    results[(i, p)] = _patched_run(model, p, 0.5 + i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i, m)) for i, m in enumerate((lm, other))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert results.keys() == expected.keys()
    for key, value in expected.items():
        assert np.array_equal(results[key], value), key
    assert_clean(lm, baseline)


def test_threads_on_the_same_model_take_turns(lm, baseline):
    prompts = ["Once upon a time", "The dog ran far away", "Lily liked to play", "A cat sat"]
    expected = {(i, p): _patched_run(lm, p, 0.25 * (i + 1)) for i in range(3) for p in prompts}
    plain = np.array(lm.mlx_model(token_ids(lm, prompts[0])))
    a_inside, events = threading.Event(), []
    results: dict = {}
    errors: list = []

    def holder() -> None:
        with lm.trace(prompts[0]):
            a_inside.set()
            time.sleep(0.3)  # the other thread arrives while this trace is open
            events.append("a exits")
            out = lm.output.save()
        results["a"] = np.array(out)

    def waiter() -> None:
        a_inside.wait(timeout=60)
        with lm.trace(prompts[0]):
            events.append("b enters")
            out = lm.output.save()
        results["b"] = np.array(out)

    def worker(i: int) -> None:
        try:
            for _ in range(2):
                for p in prompts:
                    results[(i, p)] = _patched_run(lm, p, 0.25 * (i + 1))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    pair = [threading.Thread(target=holder), threading.Thread(target=waiter)]
    for t in pair:
        t.start()
    for t in pair:
        t.join(timeout=120)
    assert events == ["a exits", "b enters"]  # serialised: b waited for a's trace to end
    workers = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in pair + workers)
    assert errors == []
    for key, value in expected.items():
        assert np.array_equal(results[key], value), key
    assert np.array_equal(results["a"], plain) and np.array_equal(results["b"], plain)
    assert_clean(lm, baseline)


def test_two_wrappers_of_one_module_in_two_threads_never_unhook_each_other(lm, baseline):
    """Each wrapper has its own lock, so their runs can overlap: thread B stops inside its forward
    (in layer 0) while thread A runs a whole trace of the same modules; B must still be hooked at
    layer 1 afterwards. Hooks are counted per module, not per run."""
    ids, _, logits = baseline
    wrapper = mlxsight.NNsight(lm.mlx_model)
    inner = lm.mlx_model.model
    reference = np.array(inner.layers[1](inner.layers[0](inner.embed_tokens(ids), "causal"), "causal"))
    block = type(inner.layers[0])
    hooks._hooked_subclass(block)  # hooked layers keep calling the original forward
    original = block.__call__
    b_inside, a_done = threading.Event(), threading.Event()
    results: dict = {}
    errors: list = []

    def pausing_call(self, *args, **kwargs):
        if threading.current_thread().name == "b" and not b_inside.is_set():
            b_inside.set()
            a_done.wait(timeout=60)
        return original(self, *args, **kwargs)

    def a() -> None:
        try:
            b_inside.wait(timeout=60)
            with lm.trace(ids):
                h = lm.model.layers[1].output.save()
            results["a"] = np.array(h)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            a_done.set()

    def b() -> None:
        try:
            with wrapper.trace(ids):
                h = wrapper.model.layers[1].output.save()
                out = wrapper.output.save()
            results["b"] = (np.array(h), np.array(out))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    block.__call__ = pausing_call
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a missed hook point warns: make it fail
            threads = [threading.Thread(target=a, name="a"), threading.Thread(target=b, name="b")]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
    finally:
        block.__call__ = original
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert b_inside.is_set()
    assert np.allclose(results["a"], reference, atol=1e-5)
    assert np.allclose(results["b"][0], reference, atol=1e-5)
    assert np.array_equal(results["b"][1], logits)
    assert hooks._holders == {}
    assert_clean(lm, baseline)


def test_a_trace_is_invisible_to_other_threads(lm, baseline):
    seen = []
    with lm.trace(PROMPT):
        t = threading.Thread(target=lambda: seen.append(context.current_tracer()))
        t.start()
        t.join(timeout=60)
        lm.output.save()
    assert seen == [None]
    assert_clean(lm, baseline)


# -- library frames are decided by location: every block names the user's own line -------------
def test_graph_lines_and_exit_listeners_name_the_users_file(lm):
    here = __file__
    seen = []

    def listener(info, values):
        seen.append((info["file"], info.get("edit", False)))

    mlxsight.add_exit_listener(listener)
    try:
        with lm.generate(PROMPT, max_new_tokens=2) as tracer:
            lm.model.layers[0].output.save()
        printed = str(tracer.graph)
        with lm.edit() as (_, edited):
            edited.model.layers[1].output = edited.model.layers[1].output * 0.5
    finally:
        mlxsight.remove_exit_listener(listener)
    assert "test_reliability.py" in printed and "generation.py" not in printed
    assert seen == [(here, False), (here, True)]


def test_generate_knows_a_with_statement_without_reading_the_source(lm):
    """The code's file may have changed since it was compiled (a notebook, an edited script): the
    decision comes from the bytecode. Here the 'file' says line 1 is a docstring."""
    namespace = {"lm": lm, "PROMPT": PROMPT}
    exec(compile("with lm.generate(PROMPT, max_new_tokens=2) as tracer:\n    ids = tracer.result.save()\n",
                 __file__, "exec"), namespace)
    exec(compile("plain = lm.generate(PROMPT, max_new_tokens=2)\n", __file__, "exec"), namespace)
    assert isinstance(namespace["tracer"], mlxsight.Tracer)
    assert np.array_equal(np.array(namespace["ids"]), np.array(namespace["plain"]))
    assert namespace["ids"].shape[1] == token_ids(lm, PROMPT).shape[1] + 2


ABANDONED = '''\
import sys
def quit_at_exit(frame, event, arg):  # what pdb's "q" does: raise from the with statement's exit line
    if event == "line" and frame.f_code.co_filename == __file__ and frame.f_lineno == {line} and seen[0]:
        sys.settrace(None)
        raise KeyboardInterrupt("quit")
    if event == "line" and frame.f_code.co_filename == __file__ and frame.f_lineno == {line} + 1:
        seen[0] = True
    return quit_at_exit
seen = [False]
sys.settrace(quit_at_exit)
sys._getframe().f_trace = quit_at_exit
{block}
'''


@pytest.mark.parametrize("kind", ["trace", "session", "generate"])
def test_a_block_left_without_its_exit_is_discarded(lm, baseline, tmp_path, kind):
    """A trace function that raises at a ``with`` statement's exit line (a debugger quitting)
    makes Python skip ``__exit__``: the block stays open. The next block discards it with a
    warning instead of failing every later trace, and runs as on a fresh model."""
    block = {"trace": "with lm.trace(ids):\n    out = lm.output.save()",
             "session": "with lm.session():\n    out = 1",
             "generate": "with lm.generate(ids, max_new_tokens=2):\n    out = lm.output.save()"}[kind]
    path = tmp_path / "abandoned.py"
    path.write_text(ABANDONED.format(line=12, block=block))
    ids = baseline[0]
    namespace = {"lm": lm, "ids": ids, "__file__": str(path)}
    with pytest.raises(KeyboardInterrupt):
        exec(compile(path.read_text(), str(path), "exec"), namespace)
    assert (context.current_tracer() or context.current_session()) is not None  # what Python left open
    with pytest.warns(RuntimeWarning, match=r"abandoned\.py:12 was left without its exit"):
        with lm.trace(ids):
            logits = lm.output.save()
    np.testing.assert_array_equal(np.array(logits), baseline[2])
    assert_clean(lm, baseline)


def test_reentering_the_same_statement_discards_its_abandoned_block(lm, baseline):
    """In one frame, entering a ``with`` statement whose own block is still open (left without its
    exit) discards the old block; a genuinely nested trace is still refused."""
    ids = baseline[0]
    caught = []
    for _ in range(2):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            tracer = lm.trace(ids).__enter__()  # one statement entered twice: the first left open
        caught.append([str(w.message) for w in seen])
    out = lm.output.save()
    tracer.__exit__(None, None, None)
    assert caught[0] == [] and len(caught[1]) == 1 and "was left without its exit" in caught[1][0]
    np.testing.assert_array_equal(np.array(out), baseline[2])
    with lm.trace(ids):
        with pytest.raises(mlxsight.NestedTraceError):
            with lm.trace(ids):
                pass
    assert_clean(lm, baseline)
