"""Invoke bodies run as workers meeting at barriers (mlxsight.workers), as nnsight runs them.

References: separate plain traces written by hand (the value each handover must carry), the same
trace recorded inline without a barrier where that order already gives the answer, and nnsight
itself on the same checkpoint (`compat crosscheck` of tests/compat_scripts/barrier_patching.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import pytest

import mlxsight
from mlxsight import assets, context
from tiny_models import cached_checkpoint

ROOT = Path(__file__).resolve().parent.parent
CLEAN, CORRUPT = "Lily went to the park", "Lily ran to the park"
TOK = 7


@pytest.fixture(scope="module")
def stories():
    return mlxsight.LanguageModel(str(assets.path("stories260k")))


def layer_outputs(model, prompt):
    """Every layer's output on ``prompt``, from one plain trace."""
    with model.trace(prompt):
        outs = mlxsight.save([layer.output for layer in model.model.layers])
    return outs


def patched(model, layer, token, clean_h):
    """The corrupt run's logit of TOK with position ``token`` of ``layer`` taken from ``clean_h``."""
    with model.trace(CORRUPT):
        model.model.layers[layer].output[:, token, :] = clean_h[:, token, :]
        value = model.lm_head.output[0, -1, TOK].save()
    return value.item()


def test_ioi_tutorial_pattern_equals_one_trace_per_patch(stories):
    """nnsight.net's IOI patching tutorial: the clean body rebinds `hidden_state` per layer and calls
    that layer's barrier; every patching body calls its layer's barrier, then patches one position
    from `hidden_state`. Each number equals its own two-trace reference."""
    n_layers = len(stories.model.layers)
    tokens = len(stories.tokenizer(CLEAN)["input_ids"])
    results = []
    with stories.trace() as tracer:
        barriers = [tracer.barrier(tokens + 1) for _ in range(n_layers)]
        with tracer.invoke(CLEAN):
            for layer_idx in range(n_layers):
                hidden_state = stories.model.layers[layer_idx].output
                barriers[layer_idx]()
            clean_logit = stories.lm_head.output[0, -1, TOK].save()
        for layer_idx in range(n_layers):
            row = []
            for token_idx in range(tokens):
                with tracer.invoke(CORRUPT):
                    barriers[layer_idx]()
                    stories.model.layers[layer_idx].output[:, token_idx, :] = hidden_state[:, token_idx, :]
                    row.append(stories.lm_head.output[0, -1, TOK].item())
            results.append(row)
    clean_hs = layer_outputs(stories, CLEAN)
    expected = [[patched(stories, layer, t, clean_hs[layer]) for t in range(tokens)] for layer in range(n_layers)]
    assert mx.allclose(mx.array(results), mx.array(expected), atol=1e-5)
    assert len({round(v, 4) for row in expected for v in row}) > n_layers  # the patches do differ
    with stories.trace(CLEAN):
        ref = stories.lm_head.output[0, -1, TOK].save()
    assert abs(clean_logit.item() - ref.item()) < 1e-5
    assert "hidden_state" not in dir()  # unsaved proxies are not left in the caller


def test_a_rebound_name_carries_the_value_its_body_held_at_the_barrier(stories):
    """Read after each layer's barrier, the rebound name is that layer's output; with the saves in
    a function's frame (fast locals) the saved names reach it."""
    def sweep():
        n = len(stories.model.layers)
        with stories.trace() as tracer:
            barriers = [tracer.barrier(2) for _ in range(n)]
            with tracer.invoke(CLEAN):
                for i in range(n):
                    h = stories.model.layers[i].output
                    barriers[i]()
            seen = mlxsight.save([])
            for i in range(n):
                with tracer.invoke(CORRUPT):
                    barriers[i]()
                    seen.append(h.save())
                    last = h[:, -1].save()
        return seen, last

    seen, last = sweep()
    ref = layer_outputs(stories, CLEAN)
    assert len(seen) == len(ref)
    for got, want in zip(seen, ref):  # batched with another row: equal up to float rounding
        assert mx.allclose(got, want, atol=1e-5)
    assert mx.allclose(last, ref[-1][:, -1], atol=1e-5)
    assert not mx.allclose(seen[0], seen[-1], atol=1e-2)


def test_a_barrier_hands_a_value_over_as_asking_for_the_point_first_does(stories):
    """Every invoke body is a worker (barrier or not): the value handed over at a barrier equals the
    one a body reads after asking for the layer itself (where the donor body has bound it), and
    the one-statement write without either raises nnsight's NameError (the right-hand side is
    evaluated at the body's start, before the donor body ran)."""
    def run(how):
        with stories.trace() as tracer:
            barrier = tracer.barrier(2)
            with tracer.invoke(CLEAN):
                donor = stories.model.layers[1].output[:, -1]
                if how == "barrier":
                    barrier()
            with tracer.invoke(CORRUPT):
                if how == "barrier":
                    barrier()
                    stories.model.layers[1].output[:, -1] = donor
                elif how == "point first":
                    h = stories.model.layers[1].output
                    h[:, -1] = donor
                else:
                    stories.model.layers[1].output[:, -1] = donor
                out = stories.lm_head.output.save()
        return out

    assert mx.allclose(run("barrier"), run("point first"), atol=1e-6)
    with pytest.raises(NameError, match="donor"):
        run("neither")


def test_barrier_in_generation_hands_embeddings_over(stories):
    """nnsight's docs (usage/barrier.md): one body reads a prompt's embeddings, a second one, after
    the barrier, generates from them. Reference: the same trace without a barrier, the second body asking for the point first."""
    prompt, blank = "Lily went to the", "a a a a a"
    assert len(stories.tokenizer(prompt)["input_ids"]) == len(stories.tokenizer(blank)["input_ids"])

    def run(with_barrier):
        with stories.generate(max_new_tokens=3, do_sample=False) as tracer:
            barrier = tracer.barrier(2) if with_barrier else (lambda: None)
            with tracer.invoke(prompt):
                embeddings = stories.model.embed_tokens.output
                barrier()
                donor_tokens = tracer.result.save()
            with tracer.invoke(blank):
                barrier()
                if not with_barrier:  # ask for the point first: the first body has bound `embeddings` there
                    stories.model.embed_tokens.output
                stories.model.embed_tokens.output = embeddings
                tokens = tracer.result.save()
        return donor_tokens, tokens

    got, ref = run(True), run(False)
    assert mx.array_equal(got[0], ref[0]) and mx.array_equal(got[1], ref[1])
    assert mx.array_equal(got[0][:, -3:], got[1][:, -3:])  # same embeddings, same continuation


def test_asking_after_a_barrier_for_a_point_the_forward_passed_is_out_of_order(stories):
    """After the barrier the forward is at layer 3 (where the other body waited): layer 1 is behind
    it, as in nnsight (its worker would wait for a point already run past)."""
    with pytest.raises(mlxsight.OutOfOrderError, match="already ran past") as info:
        with stories.trace() as tracer:
            barrier = tracer.barrier(2)
            with tracer.invoke(CLEAN):
                late = stories.model.layers[3].output
                barrier()
            with tracer.invoke(CORRUPT):
                barrier()
                stories.model.layers[1].output[:] = late
    assert "test_barrier_workers.py" in str(info.value)  # at the user's line
    # within one body the forward order is still nnsight's rule
    with pytest.raises(mlxsight.OutOfOrderError):
        with stories.trace() as tracer:
            barrier = tracer.barrier(1)
            with tracer.invoke(CLEAN):
                stories.model.layers[3].output
                stories.model.layers[1].output


def test_a_barrier_that_never_fills_is_nnsights_error_at_the_waiting_line(stories):
    with pytest.raises(ValueError, match="never reached by every block") as info:
        with stories.trace() as tracer:
            barrier = tracer.barrier(3)
            with tracer.invoke(CLEAN):
                stories.model.layers[0].output
                barrier()
            with tracer.invoke(CORRUPT):
                barrier()
    frames = [f.name for f in __import__("traceback").extract_tb(info.value.__traceback__)]
    assert "test_a_barrier_that_never_fills_is_nnsights_error_at_the_waiting_line" in frames


@pytest.mark.parametrize("error", [ZeroDivisionError, KeyboardInterrupt])
def test_an_error_inside_a_worker_unwinds_the_others_and_leaves_nothing_behind(stories, error):
    before = layer_outputs(stories, CLEAN)[-1]
    kept = "before the trace"
    unwound = []
    with pytest.raises(error):
        with stories.trace() as tracer:
            barrier = tracer.barrier(2)
            with tracer.invoke(CLEAN):
                h = None  # a body cannot start with `try:` (nnsight refuses it too)
                try:
                    h = stories.model.layers[0].output
                    barrier()
                    stories.model.layers[4].output
                finally:
                    unwound.append("clean")
            with tracer.invoke(CORRUPT):
                barrier()
                kept = stories.model.layers[2].output.save()
                raise error()
    assert unwound == ["clean"]  # the waiting body was ended (its finally ran)
    assert kept == "before the trace" and "h" not in dir()
    assert context.current_tracer() is None
    assert mx.array_equal(layer_outputs(stories, CLEAN)[-1], before)  # the next trace works, unchanged
    with stories.trace() as tracer:  # and so does the next trace with workers
        barrier = tracer.barrier(2)
        with tracer.invoke(CLEAN):
            h = stories.model.layers[4].output
            barrier()
        with tracer.invoke(CORRUPT):
            barrier()
            again = h.save()
    assert mx.allclose(again, before, atol=1e-5)


def test_stop_in_a_worker_ends_that_body_only(stories):
    """tracer.stop() ends its own body (as an inline invoke's); the other body's values up to that
    point are served."""
    with stories.trace() as tracer:
        barrier = tracer.barrier(2)
        with tracer.invoke(CLEAN):
            h = stories.model.layers[1].output
            barrier()
            tracer.stop()
            never = "reached"
        with tracer.invoke(CORRUPT):
            barrier()
            got = h.save()
    assert mx.allclose(got, layer_outputs(stories, CLEAN)[1], atol=1e-5)
    assert "never" not in dir()


def test_tutorial_pattern_equals_nnsight_on_the_same_checkpoint():
    """tests/compat_scripts/barrier_patching.py on both backends: the IOI tutorial's 52 numbers,
    each layer's handed value, and the two error cases, equal to nnsight's."""
    ckpt = cached_checkpoint("gpt2")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, "-m", "compat", "crosscheck",
                           str(ROOT / "tests" / "compat_scripts" / "barrier_patching.py"), str(ckpt)],
                          capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "60 values: 60 match" in proc.stdout


def test_notebook_shell_escape_inside_a_statement_keeps_the_cell_valid(tmp_path):
    """conformance.docs: `if is_colab:` then `!pip install ...` (nnsight.net's first cell) becomes
    `pass` there, as IPython runs it (a top-level one too: a statement that does nothing here)."""
    from conformance.docs import notebook_blocks

    cell = {"cell_type": "code", "source": ["if False:\n", "    !pip install -U nnsight\n", "%matplotlib inline\n",
                                            "x = 1"]}
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps({"cells": [cell]}))
    (block,) = notebook_blocks(path)
    assert block == "if False:\n    pass\npass\nx = 1\n"
    compile(block, "cell", "exec")


def test_a_body_starting_with_try_is_refused_and_the_trace_closes(stories):
    """CPython gives the `try` line no way back to the block's exit; nnsight refuses the shape too."""
    with pytest.raises(ValueError, match="cannot start with `try:`"):
        with stories.trace() as tracer:
            tracer.barrier(1)
            with tracer.invoke(CLEAN):
                try:
                    stories.model.layers[0].output
                finally:
                    pass
    assert context.current_tracer() is None
    with stories.trace(CLEAN):  # a multi-line header: the body is skipped only once `as` has bound
        out = stories.lm_head.output.save()
    with stories.trace() as tracer:
        barrier = tracer.barrier(1)
        with tracer.invoke(
            CLEAN,
        ) as invoker:
            barrier()
            same = mlxsight.save(invoker is not None)
            got = stories.lm_head.output.save()
    assert same and mx.allclose(got, out, atol=1e-6)


def test_a_kept_tracer_holds_none_of_the_bodies_names(stories):
    """`as tracer` outlives the block: the bodies' names and their greenlets are dropped when it
    closes, on success and on failure."""
    import gc
    import weakref

    class Marker:
        pass

    for fail in (False, True):
        made = []
        try:
            with stories.trace() as tracer:
                barrier = tracer.barrier(1)
                with tracer.invoke(CLEAN):
                    barrier()
                    held = Marker()
                    made.append(weakref.ref(held))
                    out = stories.lm_head.output.save()
                if fail:
                    raise RuntimeError("after capture")
        except RuntimeError:
            pass
        held = None
        sys._getframe().f_locals  # noqa: B018 - refresh the frame's cached locals dict (3.11 keeps the old one)
        gc.collect()
        assert len(made) == (0 if fail else 1)
        assert all(ref() is None for ref in made)
        assert all(w.scope is None and w.greenlet is None for w in tracer.workers.workers)


def test_bodies_without_source_are_recorded_inline(stories):
    """Code compiled from a string has no source to read its invoke bodies back from: they are
    recorded inline, in order (a sibling's name is bound; the values equal the worker form's), and
    a value taken with `.item()` that a later inline body's edit would change is refused."""
    patch = """
with stories.trace() as tracer:
    with tracer.invoke(CLEAN):
        donor = stories.model.layers[1].output[:, -1]
    with tracer.invoke(CORRUPT):
        stories.model.layers[1].output[:, -1] = donor
        out = stories.lm_head.output.save()
"""
    names = {"stories": stories, "CLEAN": CLEAN, "CORRUPT": CORRUPT}
    exec(compile(patch, "<generated>", "exec"), names)
    with stories.trace() as tracer:
        with tracer.invoke(CLEAN):
            donor = stories.model.layers[1].output[:, -1]
        with tracer.invoke(CORRUPT):
            h = stories.model.layers[1].output
            h[:, -1] = donor
            ref = stories.lm_head.output.save()
    assert mx.allclose(names["out"], ref, atol=1e-6)
    item_then_edit = """
with stories.trace() as tracer:
    with tracer.invoke(CORRUPT):
        stories.lm_head.output[0, -1].sum().item()
    with tracer.invoke():
        stories.model.layers[0].output[:] = 0
"""
    with pytest.raises(mlxsight.OutOfOrderError, match="concrete Python value"):
        exec(compile(item_then_edit, "<generated>", "exec"), names)
