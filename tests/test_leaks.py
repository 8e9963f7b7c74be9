"""Thousands of traces leave nothing behind (issue 10): Python objects, MLX memory, process memory
and the time a trace takes stay flat, for plain traces, edits, several invokes, generation and
traces that fail (bad input, out-of-range index, escaped proxy, an exception in the block)."""

from __future__ import annotations

import gc
import os
import statistics
import time

import mlx.core as mx
import pytest

import mlxsight

PROMPTS = ["Once upon a time there was a big dog", "Lily", "Tom and Sue went"]


class Box:
    pass


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def one_round(lm, i: int, box: Box) -> None:
    """One of each kind of trace; the failing ones must fail the same way every time."""
    text = PROMPTS[i % len(PROMPTS)]
    with lm.trace(text):
        h = lm.model.layers[i % 5].output[:, -1].save()
        out = lm.output.save()
    assert isinstance(h, mx.array) and isinstance(out, mx.array)
    with lm.trace(text):
        lm.model.layers[2].output[:, -1] *= 0.5
        lm.model.layers[3].output[..., ::2] = 0
        logits = lm.output[:, -1].save()
    saved = []  # made before the trace: filled in place, as in nnsight
    with lm.trace() as tracer:
        for t in PROMPTS[:2]:
            with tracer.invoke(t):
                saved.append(lm.model.layers[1].output.mean().save())
    assert len(saved) == 2 and isinstance(logits, mx.array)
    if i % 10 == 0:
        with lm.generate(text, max_new_tokens=2) as tracer:
            ids = tracer.result.save()
        assert ids.shape[1] == len(lm.tokenizer(text)["input_ids"]) + 2
    with pytest.raises(IndexError):
        with lm.trace(text):
            lm.model.layers[0].output[:, 100] = 0
    with pytest.raises(ValueError, match="out of range"):
        with lm.trace([[5, 600]]):
            lm.output.save()
    with lm.trace(text):
        box.h = lm.model.layers[0].output  # escapes, never saved
    with pytest.raises(mlxsight.ExpiredProxyError):
        with lm.trace(text):
            lm.model.layers[1].output = box.h
    with pytest.raises(KeyError):
        with lm.trace(text):
            lm.model.layers[0].output[:] = 0
            raise KeyError("in the block")


def measure(lm, rounds: int, blocks: int) -> list[dict]:
    box = Box()
    for i in range(20):  # warm-up: structure caches, compiled kernels, lazy imports
        one_round(lm, i, box)
    figures = []
    per_block = rounds // blocks
    for b in range(blocks):
        times = []
        for i in range(per_block):
            start = time.perf_counter()
            one_round(lm, b * per_block + i, box)
            times.append(time.perf_counter() - start)
        gc.collect()
        figures.append({"objects": len(gc.get_objects()), "mlx_mib": mx.get_active_memory() / 2**20,
                        "rss_mib": _rss_mib(), "ms_per_round": 1000 * statistics.median(times)})
    return figures


def assert_flat(figures: list[dict], rounds: int) -> None:
    first, last = figures[0], figures[-1]
    traces = rounds * 7
    report = "\n".join(str({k: round(v, 2) for k, v in f.items()}) for f in figures)
    # A leak of one object per trace would add `traces` objects; allow a small constant.
    assert last["objects"] - first["objects"] < 500, report
    assert last["mlx_mib"] - first["mlx_mib"] < 5, report
    assert last["rss_mib"] - first["rss_mib"] < 64, report
    # Flat, not fast: the last block's median round is not much slower than the quickest block's (the
    # CPU is shared, so blocks vary; a per-trace leak in time grows block after block).
    assert last["ms_per_round"] < 3.0 * min(f["ms_per_round"] for f in figures) + 1, report
    print(f"\n{traces} traces, per block:\n{report}")


def test_many_traces_leave_nothing_behind(stories):
    figures = measure(stories, rounds=150, blocks=3)  # 1050 traces (+ 15 generations)
    assert_flat(figures, 150)
    assert mlxsight.context.current_tracer() is None


@pytest.mark.slow
def test_many_traces_leave_nothing_behind_long(stories):
    figures = measure(stories, rounds=2000, blocks=8)  # 14000 traces
    assert_flat(figures, 2000)
