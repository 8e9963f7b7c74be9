"""Activation patching against a naive loop of plain patched traces (one trace per cell)."""

import mlxsight
import mlx.core as mx  # noqa: F401  (mlx before nnsight/transformers, always)
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mlxsight import tools

CLEAN = "Once upon a time, there was a little girl named Lily. She was very happy. One day,"
CORRUPT = CLEAN.replace("Lily", "Tim")


@pytest.fixture(scope="module")
def hf(stories_path):
    return mlxsight.LanguageModel(stories_path)


@pytest.fixture(scope="module")
def names(hf):
    tok = hf.tokenizer
    return tok.convert_tokens_to_ids("▁Lily"), tok.convert_tokens_to_ids("▁Tim")


def naive_cell(model, component, layer, pos, head=None, d_head=8):
    """The metric's logits after one plain trace: clean invoke read, corrupted invoke patched."""
    layers = model.model.layers
    hf_view = getattr(model, "view", "hf") == "hf"
    with model.trace() as tracer:
        with tracer.invoke(CLEAN):
            if component == "resid":
                value = layers[layer].input[:, pos]
            elif component == "attn":
                out = layers[layer].self_attn.output
                value = (out[0] if hf_view else out)[:, pos]
            elif component == "mlp":
                value = layers[layer].mlp.output[:, pos]
            else:
                value = layers[layer].self_attn.o_proj.input[:, pos, head * d_head:(head + 1) * d_head]
        with tracer.invoke(CORRUPT):
            # each site is asked for before `value` is read: the clean body has bound it there (as in nnsight)
            if component == "resid":
                x = layers[layer].input
                x[:, pos] = value
            elif component == "attn":
                out = layers[layer].self_attn.output
                (out[0] if hf_view else out)[:, pos] = value
            elif component == "mlp":
                x = layers[layer].mlp.output
                x[:, pos] = value
            else:
                x = layers[layer].self_attn.o_proj.input
                x[:, pos, head * d_head:(head + 1) * d_head] = value
            logits = (model.output.logits if hf_view else model.output)[0, -1].save()
    return np.array(logits)


@pytest.mark.parametrize("component", ["resid", "attn", "mlp"])
def test_sweep_equals_naive_loop(hf, names, component):
    lily, tim = names
    res = tools.activation_patching(hf, CLEAN, CORRUPT, tools.logit_diff(lily, tim), component=component,
                                    progress=False)
    assert res.scores.shape == (5, 24) and res.method == "activation" and res.tokens[14] == "Lily"
    expected = np.array([[(lambda lg: lg[lily] - lg[tim])(naive_cell(hf, component, layer, pos))
                          for pos in range(24)] for layer in range(5)])
    np.testing.assert_allclose(res.scores, expected, atol=2e-5, rtol=1e-5)
    assert np.ptp(expected) > 1  # the sweep finds something, so the comparison is not vacuous


def test_heads_per_position_equals_naive_loop(hf, names):
    lily, tim = names
    res = tools.activation_patching(hf, CLEAN, CORRUPT, tools.logit_diff(lily, tim), component="heads",
                                    layers=[0, 3], positions=[14, -1], progress=False)
    assert res.scores.shape == (2, 2, 8) and res.positions == [14, 23] and res.heads == list(range(8))
    expected = np.array([[[(lambda lg: lg[lily] - lg[tim])(naive_cell(hf, "heads", layer, pos, h))
                           for h in range(8)] for pos in (14, 23)] for layer in (0, 3)])
    np.testing.assert_allclose(res.scores, expected, atol=2e-5, rtol=1e-5)


def test_heads_all_positions_equals_naive_loop(hf, names):
    lily, tim = names
    res = tools.activation_patching(hf, CLEAN, CORRUPT, tools.probability(lily), component="heads",
                                    layers=[1], progress=False)
    assert res.scores.shape == (1, 8) and res.positions is None
    expected = []
    for h in range(8):
        logits = naive_cell(hf, "heads", 1, slice(None), h)
        p = np.exp(logits - logits.max())
        expected.append(p[lily] / p.sum())
    np.testing.assert_allclose(res.scores[0], expected, atol=1e-6, rtol=1e-5)


def test_name_patching_localises_early(hf, names):
    """The demo's figures: 'Lily' vs 'Tim' at position 14 recovers ~100/100/98/16/14 % at layers 0-4."""
    lily, tim = names
    res = tools.activation_patching(hf, CLEAN, CORRUPT, tools.logit_diff(lily, tim), positions=[14],
                                    progress=False)
    recovered = np.round(100 * res.normalized[:, 0])
    np.testing.assert_allclose(recovered, [100, 100, 98, 16, 14], atol=1)
    assert res.clean == pytest.approx(7.77, abs=0.01) and res.corrupted == pytest.approx(0.88, abs=0.01)


def test_kl_metric_and_mlx_view(stories, names):
    """KL(clean || patched) on the mlx-lm view: patching the name in at layer 0 gives the clean run."""
    res = tools.activation_patching(stories, CLEAN, CORRUPT, tools.kl_div(), layers=[0, 4], positions=[14, 3],
                                    progress=False)
    assert res.clean == pytest.approx(0, abs=1e-6) and res.corrupted > 0.1
    assert res.scores[0, 0] == pytest.approx(0, abs=1e-5)  # layer 0, the name: all of the clean run
    assert res.scores[:, 1] == pytest.approx([res.corrupted] * 2)  # position 3: identical tokens, no effect


def test_patched_runs_continue_the_corrupted_cache(hf, names, monkeypatch):
    """On MLX a forward whose patches all lie at or after position p runs positions p..T-1 only,
    continuing the corrupted run's KV cache (values: the tests against the naive loop)."""
    from mlxsight.tools import backend

    runs = []
    run = backend.run

    def spy(model, inputs, read, **kw):
        runs.append((len(inputs[0]), "past_key_values" in kw))
        return run(model, inputs, read, **kw)

    monkeypatch.setattr(backend, "run", spy)
    tools.activation_patching(hf, CLEAN, CORRUPT, tools.logit_diff(*names), positions=[-1], progress=False)
    assert runs and all(r == (1, True) for r in runs if r[1]) and any(r[1] for r in runs)
    runs.clear()
    tools.activation_patching(hf, CLEAN, CORRUPT, tools.logit_diff(*names), layers=[1, 2], positions=[20, 16],
                              progress=False)
    assert (8, True) in runs  # positions 16.. (a layer's two cells in one forward)


@settings(max_examples=6, deadline=None)
@given(component=st.sampled_from(["resid", "attn", "mlp", "heads"]),
       layers=st.lists(st.integers(0, 4), min_size=1, max_size=2, unique=True),
       positions=st.lists(st.integers(1, 23), min_size=1, max_size=2, unique=True))
def test_any_cells_equal_naive_loop(hf, names, component, layers, positions):
    lily, tim = names
    heads = [6] if component == "heads" else None
    res = tools.activation_patching(hf, CLEAN, CORRUPT, tools.logit_diff(lily, tim), component=component,
                                    layers=layers, positions=positions, heads=heads, progress=False)
    for i, layer in enumerate(layers):
        for j, pos in enumerate(positions):
            logits = naive_cell(hf, component, layer, pos, 6)
            got = res.scores[(i, j, 0) if heads else (i, j)]
            assert got == pytest.approx(logits[lily] - logits[tim], abs=2e-5), (layer, pos)


def test_callable_metric(hf, names):
    lily, tim = names

    def top_minus_tim(logits):
        return logits.max(axis=-1) - logits[:, tim]

    res = tools.activation_patching(hf, CLEAN, CORRUPT, top_minus_tim, layers=[2], positions=[14], progress=False)
    logits = naive_cell(hf, "resid", 2, 14)
    assert res.metric == "top_minus_tim"
    assert res.scores[0, 0] == pytest.approx(logits.max() - logits[tim], abs=2e-5)


def test_different_lengths_are_rejected(hf, names):
    with pytest.raises(ValueError, match="24 tokens and the corrupted one 39"):
        tools.activation_patching(hf, CLEAN, CLEAN.replace("Lily", "Alexandra Maximiliana"),
                                  tools.logit_diff(*names), progress=False)


@pytest.mark.parametrize("arch", ["gpt2", "gemma2", "gpt_neox"])
@pytest.mark.parametrize("component", ["resid", "attn", "heads"])
def test_other_families_equal_naive_loop(arch, component):
    """GPT-2 (c_proj, tied), Gemma 2 (scaled embeddings, post-norms, soft-capping), GPT-NeoX (dense):
    each cell against one plain two-invoke trace over the standardized paths."""
    from tiny_models import cached_checkpoint

    model = mlxsight.LanguageModel(cached_checkpoint(arch))
    std = tools.standardize(model)
    rng = np.random.default_rng(1)
    clean = rng.integers(5, 500, 10).tolist()
    corrupt = list(clean)
    corrupt[3] = (corrupt[3] + 11) % 500
    res = tools.activation_patching(model, clean, corrupt, tools.logit_diff(7, 9), component=component,
                                    positions=[3, -1], progress=False)
    proj = {"gpt2": "c_proj", "gemma2": "o_proj", "gpt_neox": "dense"}[arch]
    d_head = std.d_head
    for i, layer in enumerate(res.layers):
        for j, pos in enumerate((3, 9)):
            for h in (range(std.n_heads) if component == "heads" else [None]):
                with model.trace() as tracer:
                    for ids, write in ((clean, False), (corrupt, True)):
                        with tracer.invoke([ids]):
                            if component == "resid":
                                target, key = std.layers[layer].input, (slice(None), pos)
                            elif component == "attn":
                                target, key = std.attention[layer].output[0], (slice(None), pos)
                            else:
                                target = getattr(std.attention[layer], proj).input
                                key = (slice(None), pos, slice(h * d_head, (h + 1) * d_head))
                            if write:
                                target[key] = value
                                logits = model.output.logits[0, -1].save()
                            else:
                                value = target[key]
                expected = float(logits[7] - logits[9])
                got = res.scores[(i, j) + ((h,) if h is not None else ())]
                assert got == pytest.approx(expected, abs=5e-5), (layer, pos, h)
