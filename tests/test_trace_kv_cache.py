"""``model.trace(ids, past_key_values=cache)``: a trace continuing an mlx-lm KV cache equals the
uncached forward over the whole sequence (the reference: one plain trace of every token)."""

import mlxsight
import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from mlx_lm.models.cache import KVCache

from mlxsight import assets

TEXT = "Once upon a time, there was a little girl named Lily. She was very happy."


@pytest.fixture(scope="module", params=["hf", "mlx"])
def model(request):
    return mlxsight.LanguageModel(assets.path("stories260k"), view=request.param)


def _logits(model):
    return model.output.logits if model.view == "hf" else model.output


def _first(x):
    return x[0] if isinstance(x, tuple) else x


def _full(model, ids):
    with model.trace([ids]):
        h = model.model.layers[2].output.save()
        logits = _logits(model).save()
    return np.array(_first(h)), np.array(logits)


@settings(max_examples=8, deadline=None)
@given(split=st.integers(1, 18))
def test_prefix_then_rest_equals_one_forward(model, split):
    ids = model.tokenizer(TEXT)["input_ids"]
    h_full, full = _full(model, ids)
    cache = [KVCache() for _ in range(5)]
    with model.trace([ids[:split]], past_key_values=cache):
        first = _logits(model).save()
    assert cache[0].offset == split  # learning the structure did not write the cache too
    with model.trace([ids[split:]], past_key_values=cache):
        h = model.model.layers[2].output.save()
        rest = _logits(model).save()
    assert all(c.offset == len(ids) for c in cache)  # continued as mlx-lm continues it
    np.testing.assert_allclose(np.concatenate([np.array(first), np.array(rest)], 1), full, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.array(_first(h)), h_full[:, split:], atol=1e-5, rtol=1e-5)


def test_skip_and_edit_on_a_continued_cache(model):
    """Several rows continue one prefix (broadcast), with layers skipped and an edit: each row
    equals a full forward with the same edit at the last position."""
    ids = model.tokenizer(TEXT)["input_ids"]
    T = len(ids)
    with model.trace([ids]):
        resid = model.model.layers[2].input.save()
    filled = [KVCache() for _ in range(5)]
    with model.trace([ids[:-1]], past_key_values=filled):
        out = model.output.save()
    cache = []
    for c in filled:
        fresh = KVCache()
        k, v = c.keys[..., :c.offset, :], c.values[..., :c.offset, :]
        fresh.state = (mx.broadcast_to(k, (3,) + k.shape[1:]), mx.broadcast_to(v, (3,) + v.shape[1:]), c.offset)
        cache.append(fresh)
    scale = mx.array([1.0, 0.5, -1.0])[:, None, None]
    with model.trace([ids[-1:]] * 3, past_key_values=cache):
        for layer in range(2):
            model.model.layers[layer].skip(mx.broadcast_to(resid[:, -1:], (3, 1, resid.shape[-1])))
        model.model.layers[3].mlp.output = model.model.layers[3].mlp.output * scale
        got = _logits(model)[:, -1].save()
    for row, s in enumerate((1.0, 0.5, -1.0)):
        with model.trace([ids]):
            model.model.layers[3].mlp.output[:, -1] = model.model.layers[3].mlp.output[:, -1] * s
            want = _logits(model)[0, -1].save()
        np.testing.assert_allclose(np.array(got[row]), np.array(want), atol=2e-5)
    assert filled[0].offset == T - 1  # the broadcast copies were continued, not the filled cache


@pytest.mark.parametrize("block", ["saves an early layer", "saves nothing", "needs a value while recording"])
def test_every_layer_continues_the_cache_whatever_the_block_saves(model, block):
    """The cache is the caller's: as on transformers/nnsight the whole forward continues it, once.
    A block that saves only an early layer (or nothing) still runs every layer, and a value needed
    while the block records (``.item()``) is computed without writing the cache."""
    ids = model.tokenizer(TEXT)["input_ids"]
    _, full = _full(model, ids)
    cache = [KVCache() for _ in range(5)]
    with model.trace([ids[:-3]], past_key_values=cache):
        if block == "saves an early layer":
            h = model.model.layers[1].output.save()
        elif block == "needs a value while recording":
            norm = _first(model.model.layers[1].output).norm().item()
            assert norm > 0
            model.model.layers[2].output.save()
    assert [c.offset for c in cache] == [len(ids) - 3] * 5
    with model.trace([ids[-3:]], past_key_values=cache):
        rest = _logits(model).save()
    assert [c.offset for c in cache] == [len(ids)] * 5
    np.testing.assert_allclose(np.array(rest), full[:, -3:], atol=1e-5, rtol=1e-5)


def test_scan_leaves_the_cache(model):
    ids = model.tokenizer(TEXT)["input_ids"]
    cache = [KVCache() for _ in range(5)]
    with model.trace([ids[:5]], past_key_values=cache):
        out = model.output.save()
    with model.scan([ids[5:9]], past_key_values=cache):
        shape = mlxsight.save(_logits(model).shape)
    assert tuple(shape)[:2] == (1, 4) and cache[0].offset == 5


def test_misuse_is_refused(model):
    ids = model.tokenizer(TEXT)["input_ids"]
    cache = [KVCache() for _ in range(5)]
    with pytest.raises(TypeError, match="list of 5 mlx_lm KVCache"):
        with model.trace([ids], past_key_values=cache[:4]):
            pass
    with pytest.raises(ValueError, match="padded"):
        with model.trace([ids, ids[:3]], past_key_values=cache):
            pass
    with pytest.raises(ValueError, match="same cache"):
        with model.trace() as tracer:
            with tracer.invoke([ids], past_key_values=cache):
                pass
            with tracer.invoke([ids]):
                pass
    assert cache[0].offset == 0
    with model.trace([ids[:4]], past_key_values=cache):
        out = model.output.save()
    with pytest.raises(ValueError, match=r"holds \[1\] row\(s\); the trace has 2"):
        with model.trace([ids[4:6], ids[6:8]], past_key_values=cache):
            pass
    assert cache[0].offset == 4
