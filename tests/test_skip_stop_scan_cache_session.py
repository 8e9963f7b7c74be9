"""skip, stop, scan, cache and session, checked against eager hand-run forwards."""

import mlx.core as mx
import pytest

import mlxsight
from mlxsight.structure import ArraySpec
from reference import llama_forward, token_ids


def test_skip_layer_equals_identity_layer(stories, prompt):
    ids = token_ids(stories, prompt)
    inner = stories.mlx_model.model
    h = inner.embed_tokens(ids)
    for i, layer in enumerate(inner.layers):
        h = h if i == 2 else layer(h, "causal", None)
    ref = inner.embed_tokens.as_linear(inner.norm(h))
    with stories.trace(prompt):
        layer = stories.model.layers[2]
        layer.skip(layer.input)
        out = stories.output.save()
        skipped = layer.output.save()
        assert layer.output is not None
    assert mx.allclose(out, ref, atol=1e-5)
    _, outs, _ = llama_forward(stories.mlx_model, ids)
    assert mx.array_equal(skipped, outs[1])


def test_skip_rejects_reads_inside_and_wrong_shapes(stories, prompt):
    with pytest.raises(mlxsight.OutOfOrderError, match="skipped"):
        with stories.trace(prompt):
            stories.model.layers[1].skip(stories.model.layers[1].input)
            stories.model.layers[1].mlp.output.save()
    with pytest.raises(mlxsight.TraceError, match=r"skipped.*shape"):
        with stories.trace(prompt):
            stories.model.layers[1].skip(mx.zeros((1, 2, 64)))


def test_batched_skip_covers_every_row(stories):
    texts = ["Once upon a time", "The dog ran far away"]
    with stories.trace() as tracer:
        for t in texts:
            with tracer.invoke(t):
                stories.model.layers[3].skip(stories.model.layers[3].input)
        with tracer.invoke():
            both = stories.output.save()
    with stories.trace(texts[1]):
        stories.model.layers[3].skip(stories.model.layers[3].input)
        solo = stories.output.save()
    assert mx.allclose(both[1:, -solo.shape[1]:], solo, atol=1e-4)
    with pytest.raises(ValueError, match="cover every row"):
        with stories.trace() as tracer:
            with tracer.invoke(texts[0]):
                stories.model.layers[3].skip(stories.model.layers[3].input)
            with tracer.invoke(texts[1]):
                out = stories.output.save()


def test_stop_ends_the_block_and_keeps_saved_values(stories, prompt):
    ran_after = []
    with stories.trace(prompt) as tracer:
        h = stories.model.layers[1].output.save()
        tracer.stop()
        ran_after.append(True)
    assert not ran_after
    _, outs, _ = llama_forward(stories.mlx_model, token_ids(stories, prompt))
    assert mx.array_equal(h, outs[1])


def test_scan_gives_shapes_without_computing(stories, prompt):
    n = token_ids(stories, prompt).shape[1]
    with stories.scan(prompt):
        shape = mlxsight.save(stories.model.layers[0].self_attn.k_proj.output.shape)
        h = stories.model.layers[0].output.save()
        logits = stories.output.save()
    assert h == ArraySpec((1, n, 64), mx.float32)
    assert shape == (1, n, 32)
    assert logits.shape == (1, n, 512)
    with pytest.raises(mlxsight.TraceError, match="shape"):
        with stories.scan(prompt):
            stories.model.layers[0].output = mx.zeros((2, 2))


def test_cache_holds_post_intervention_values_in_completion_order(stories, prompt, tmp_path):
    ids = token_ids(stories, prompt)
    _, outs, _ = llama_forward(stories.mlx_model, ids, lambda i, h: h * 0 if i == 1 else h)
    with stories.trace(prompt) as tracer:
        cache = tracer.cache(include_inputs=True)
        stories.model.layers[1].output = stories.model.layers[1].output * 0
    keys = list(cache.keys())
    assert keys.index("model.model.layers.0.self_attn.q_proj") < keys.index("model.model.layers.0.self_attn")
    assert keys.index("model.model.layers.4") < keys.index("model.model.norm") < keys.index("model.model")
    assert keys[-1] == "model"
    for i in range(5):
        assert mx.array_equal(cache[f"model.model.layers.{i}"].output, outs[i])
    assert mx.array_equal(cache.model.model.layers[3].output, outs[3])
    assert float(mx.abs(cache["model.model.layers.2"].input).max()) == 0  # layer 2 saw the zeros
    path = tmp_path / "cache.safetensors"
    cache.save_safetensors(path)
    loaded = mlxsight.cache.Cache.load_safetensors(path)
    assert mx.array_equal(loaded["model.model.layers.3.0.output.0"], outs[3])
    # nnsight's docs: `cache._cache.model = None` lets the model go; path keys keep working
    assert cache._cache.model is stories
    cache._cache.model = None
    assert mx.array_equal(cache["model.model.layers.3"].output, outs[3])
    cache._cache.model = stories  # re-attached: navigation again
    assert mx.array_equal(cache.model.model.layers[3].output, outs[3])

    with stories.trace(prompt) as tracer:
        some = tracer.cache(modules=[stories.model.layers[0], "model.model.norm"], dtype=mx.float16)
    assert list(some.keys()) == ["model.model.layers.0", "model.model.norm"]
    assert some["model.model.norm"].output.dtype == mx.float16


def test_session_values_flow_between_traces_lazily(stories):
    clean = "Once upon a time, there was a little girl named Lily. She was very happy. One day,"
    corrupt = clean.replace("Lily", "Tim")
    with stories.session():
        with stories.trace(clean):
            h = stories.model.layers[1].output[:, 14]
        with stories.trace(corrupt):
            stories.model.layers[1].output[:, 14] = h
            patched = stories.output.save()
        with stories.trace(corrupt):
            plain = stories.output  # not saved: stays inside the session
    with stories.trace(clean):
        h_ref = stories.model.layers[1].output[:, 14].save()
    with stories.trace(corrupt):
        stories.model.layers[1].output[:, 14] = h_ref
        ref = stories.output.save()
    assert mx.array_equal(patched, ref)
    with pytest.raises(NameError):
        plain  # noqa: B018
    with pytest.raises(NameError):
        h  # noqa: B018


def test_cache_is_declared_before_the_invoke_reads_as_nnsight_requires(stories, prompt):
    """nnsight 0.8.1 raises ``ValueError`` for ``tracer.cache()`` after the invoke has read a model
    value, and outside every invoke of a trace given no input (its messages, verbatim); declared
    first, the cache fills."""
    with pytest.raises(ValueError, match=r"must be declared before reading or modifying a model value"):
        with stories.trace(prompt) as tracer:
            stories.model.layers[1].output
            tracer.cache()
    with pytest.raises(ValueError, match=r"Cannot access `tracer.cache\(\)` outside of interleaving"):
        with stories.trace() as tracer:
            tracer.cache()
            with tracer.invoke(prompt):
                pass
    with stories.trace() as tracer:
        with tracer.invoke(prompt):
            cache = tracer.cache(modules=[stories.model.layers[1]])
            out = stories.model.layers[1].output.save()
    assert mx.array_equal(cache["model.model.layers.1"].output, out)
