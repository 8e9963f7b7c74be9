"""The parts under the tracer, each against an independent reference: the compiled-schedule cache,
the closed opcode set, the bounded structure caches, the driver protocol."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

import mlxsight
from mlxsight.compiler import Compiler
from mlxsight.driver import Decoder, Driver
from mlxsight.graph import OPCODES, Graph
from mlxsight.model import Structures
from mlxsight.runner import Evaluator, Runner
from reference import llama_forward, token_ids

PROMPT = "Once upon a time there was a little girl"


@pytest.fixture(scope="module")
def lm(stories_path):
    return mlxsight.LanguageModel(stories_path, view="mlx")


def _scaled(lm, layer: int, scale: float):
    with lm.trace(PROMPT):
        lm.model.layers[layer].output = lm.model.layers[layer].output * scale
        h = lm.model.layers[layer].output.save()
        out = lm.output.save()
    return h, out


def test_identical_traces_compile_once_and_keep_their_own_constants(lm):
    ids = token_ids(lm, PROMPT)
    compiler = lm._driver.compiler
    compiler.cache.clear()
    hits, misses = compiler.hits, compiler.misses
    for scale in (0.5, 2.0, -1.0, 0.5):
        h, out = _scaled(lm, 1, scale)
        _, outs, logits = llama_forward(lm.mlx_model, ids, lambda i, x: x * scale if i == 1 else x)
        assert mx.allclose(h, outs[1], atol=1e-5) and mx.allclose(out, logits, atol=1e-4), scale
    assert compiler.misses - misses == 1  # one graph shape: compiled and validated once
    assert compiler.hits - hits == 3
    h, out = _scaled(lm, 2, 0.5)  # another layer: another shape
    _, outs, logits = llama_forward(lm.mlx_model, ids, lambda i, x: x * 0.5 if i == 2 else x)
    assert mx.allclose(out, logits, atol=1e-4)
    assert compiler.misses - misses == 2


def test_a_cache_hit_reads_the_weights_as_they_are_now(lm):
    """A cached schedule holds node indices, never values: after the weights change, the same
    trace (a cache hit) gives the new model's values, as a plain forward does."""
    ids = token_ids(lm, PROMPT)
    compiler = lm._driver.compiler
    mlp = lm.mlx_model.model.layers[2].mlp.down_proj
    original = mlp.weight
    _scaled(lm, 1, 0.5)
    hits = compiler.hits
    try:
        mlp.weight = original * 3.0
        h, out = _scaled(lm, 1, 0.5)
        _, _, logits = llama_forward(lm.mlx_model, ids, lambda i, x: x * 0.5 if i == 1 else x)
        assert compiler.hits == hits + 1
        assert mx.allclose(out, logits, atol=1e-4)
        mlp.weight = original
        _, _, unchanged = llama_forward(lm.mlx_model, ids, lambda i, x: x * 0.5 if i == 1 else x)
        assert not mx.allclose(logits, unchanged, atol=1e-3)  # the change is visible in the logits
    finally:
        mlp.weight = original


def test_a_cached_schedule_still_rejects_time_travel(lm):
    with lm.trace(PROMPT):
        lm.model.layers[1].output = lm.model.layers[1].output * 2
        out = lm.output.save()
    assert out.shape[-1] == 512
    with pytest.raises(mlxsight.OutOfOrderError):
        with lm.trace(PROMPT):
            lm.model.layers[1].output = lm.model.layers[3].output * 2
            lm.output.save()


def test_the_compile_cache_is_bounded():
    compiler = Compiler(size=2)
    from mlxsight.graph import HookPoint
    from mlxsight.structure import Structure

    structure = Structure()
    points = [HookPoint(f"l{i}", "output", 0) for i in range(4)]
    for i, p in enumerate(points):
        structure.order[p] = i
    for p in points:
        g = Graph()
        g.create("read", p)
        compiler.compile(g, structure, [g.nodes[0]])
    assert len(compiler.cache) == 2


def test_the_opcode_set_is_closed_and_every_opcode_has_a_runner_method():
    with pytest.raises(ValueError, match="unknown opcode 'bogus'"):
        Graph().create("bogus", None)
    for op in OPCODES:
        assert callable(getattr(Runner, op)) and callable(getattr(Evaluator, op))
    assert OPCODES == {"read", "write", "skip", "view", "put", "call_function", "call_method", "call_module",
                       "grad", "set_grad"}


def test_structure_caches_are_bounded(lm):
    cache = Structures(size=3)
    made = []
    for key in range(5):
        cache.get(key, lambda key=key: made.append(key) or key)
    cache.get(4, lambda: made.append("again"))
    assert list(cache.entries) == [2, 3, 4] and made == [0, 1, 2, 3, 4]
    structures = lm._driver.structures
    for n in range(1, structures.size + 4):
        with lm.trace([[5] * n]):
            lm.output.save()
    assert len(structures.entries) == structures.size


def test_models_speak_the_driver_protocol(lm):
    assert isinstance(lm._driver, Decoder)
    module = mlxsight.NNsight(lm.mlx_model)
    assert isinstance(module._driver, Driver) and not isinstance(module._driver, Decoder)
    ids = token_ids(lm, PROMPT)
    with module.trace(ids):
        out = module.output.save()
    assert np.array_equal(np.array(out), np.array(lm.mlx_model(ids)))
