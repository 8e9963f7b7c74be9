"""tools.logit_lens against a hand-written reference (transformers' layers via torch hooks), on
every adapted family; both backends on the same checkpoint; and convergence on stories260k."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import mlxsight
from mlxsight import tools
from tiny_models import ARCHS, cached_checkpoint

PROMPT = "The cat saw a red ball in the park."
NORMS = {"gpt2": "transformer.ln_f", "gpt_neox": "gpt_neox.final_layer_norm"}
LAYERS = {"gpt2": "transformer.h", "gpt_neox": "gpt_neox.layers"}


def _reference(path, ids, include_embeddings=True):
    """Per-layer probabilities from transformers itself: decoder outputs captured by torch hooks,
    decoded by its final norm, output embeddings and (Gemma 2) final soft-capping."""
    import torch
    import transformers as tf

    hf = tf.AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    arch = hf.config.model_type
    layers = hf.get_submodule(LAYERS.get(arch, "model.layers"))
    captured = []
    hooks = [layer.register_forward_hook(lambda m, i, o: captured.append(o[0] if isinstance(o, tuple) else o))
             for layer in layers]
    if include_embeddings:
        hooks.append(layers[0].register_forward_pre_hook(
            lambda m, args, kwargs: captured.insert(0, args[0] if args else kwargs["hidden_states"]),
            with_kwargs=True))
    with torch.no_grad():
        out = hf(torch.tensor([ids]))
        norm = hf.get_submodule(NORMS.get(arch, "model.norm"))
        logits = hf.get_output_embeddings()(norm(torch.stack(captured)[:, 0]))
        cap = getattr(hf.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
    for h in hooks:
        h.remove()
    return logits.softmax(-1).numpy(), out.logits[0].softmax(-1).numpy()


@pytest.mark.parametrize("arch", ARCHS)
def test_matches_transformers(arch):
    path = cached_checkpoint(arch)
    model = mlxsight.LanguageModel(path)
    r = tools.logit_lens(model, PROMPT, include_embeddings=True, targets="next")
    ref, final = _reference(path, r.input_ids)
    diff = np.abs(r.probs - ref).max()
    print(f"{arch}: max |probs - transformers| = {diff:.1e}")
    assert r.probs.shape == (5, len(r.input_ids), 512) and diff < 1e-5
    assert np.abs(r.probs[-1] - final).max() < 1e-5  # the last layer's row is the model's output
    assert r.layers == [-1, 0, 1, 2, 3] and r.labels[0] == "embeddings" and r.kind == "logit"
    _check_derived(r)


def _check_derived(r):
    """top-k, NLL and rank against the probabilities themselves."""
    order = np.argsort(-r.probs, axis=-1, kind="stable")[..., :r.top_ids.shape[-1]]
    assert np.allclose(np.take_along_axis(r.probs, order, -1), r.top_probs, atol=1e-7)
    assert np.allclose(np.take_along_axis(r.probs, r.top_ids, -1), r.top_probs)
    assert (np.diff(r.top_probs, axis=-1) <= 0).all()
    assert r.top_tokens[0][0][0] == model_str(r, r.top_ids[0, 0, 0])
    if r.targets is not None:
        t = np.array(r.targets)
        valid = t >= 0
        p = np.take_along_axis(r.probs, np.where(valid, t, 0)[None, :, None].repeat(len(r.layers), 0), -1)[..., 0]
        assert np.allclose(r.target_nll[:, valid], -np.log(p[:, valid]), atol=1e-4)
        assert np.isnan(r.target_nll[:, ~valid]).all() and (r.target_rank[:, ~valid] == -1).all()
        rank = (r.probs > p[..., None]).sum(-1)
        assert (np.abs(rank[:, valid] - r.target_rank[:, valid]) <= 1).all()  # ties in float32 only


def model_str(r, token_id):
    return r.top_tokens[0][0][list(r.top_ids[0, 0]).index(token_id)]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma2"])
def test_mlx_view_equals_hf_view(arch):
    path = cached_checkpoint(arch)
    hf = tools.logit_lens(mlxsight.LanguageModel(path), PROMPT, layers=[0, -1])
    mlx = tools.logit_lens(mlxsight.LanguageModel(path, view="mlx"), PROMPT, layers=[0, -1])
    assert hf.layers == mlx.layers == [0, 3] and np.abs(hf.probs - mlx.probs).max() < 1e-5


@pytest.mark.parametrize("arch", ["llama", "gemma2", "gpt2", "gpt_neox"])
def test_both_backends(arch):
    import nnsight
    from transformers import AutoTokenizer

    path = str(cached_checkpoint(arch))
    ours = tools.logit_lens(mlxsight.LanguageModel(path), PROMPT, top_k=3, targets="next", include_embeddings=True)
    theirs = tools.logit_lens(nnsight.LanguageModel(path, tokenizer=AutoTokenizer.from_pretrained(path)), PROMPT,
                              top_k=3, targets="next", include_embeddings=True)
    assert ours.input_ids == theirs.input_ids and ours.tokens == theirs.tokens
    assert np.abs(ours.probs - theirs.probs).max() < 1e-5
    assert np.nanmax(np.abs(ours.target_nll - theirs.target_nll)) < 1e-4
    _check_derived(theirs)


def test_stories260k_converges(stories_path):
    """The figures quoted in assets/stories260k/SOURCE.md and the docs."""
    model = mlxsight.LanguageModel(stories_path)
    prompt = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park."
    r = tools.logit_lens(model, prompt, targets="next", include_embeddings=True)
    nll = np.nanmean(r.target_nll, axis=1)
    assert np.allclose(nll, [22.91, 12.84, 6.08, 3.00, 1.30, 0.18], atol=0.01), nll
    assert (np.diff(nll) < 0).all()
    at = r.tokens.index("to")  # "She loved to" -> "play", only from layer 2 on
    assert [r.top_tokens[row][at][0] == "play" for row in range(6)] == [False, False, False, True, True, True]


@settings(max_examples=15, deadline=None)
@given(layers=st.lists(st.integers(-5, 4), min_size=1, max_size=6), k=st.integers(1, 8),
       targets=st.lists(st.one_of(st.none(), st.integers(0, 511)), min_size=8, max_size=8))
def test_rows_equal_the_full_lens(stories, layers, k, targets):
    ids = [1, 403, 407, 261, 378, 268, 1026 % 512, 300]
    full = tools.logit_lens(stories, ids, top_k=8)
    part = tools.logit_lens(stories, ids, layers=layers, top_k=k, targets=targets)
    expect = sorted({l % 5 for l in layers})
    assert part.layers == expect
    # another batch of rows through the unembedding: BLAS may block it otherwise (~4e-9 apart seen)
    np.testing.assert_allclose(part.probs, full.probs[expect], rtol=1e-5, atol=1e-8)
    assert np.array_equal(part.top_ids, full.top_ids[expect, :, :k]) or k == 8
    _check_derived(part)


def test_bad_arguments(stories):
    with pytest.raises(IndexError, match="layer 5 out of range"):
        tools.logit_lens(stories, "Hi", layers=[5])
    with pytest.raises(ValueError, match="targets has 1 entries"):
        tools.logit_lens(stories, "Once upon", targets=[3])
    with pytest.raises(TypeError, match="text or a non-empty list"):
        tools.logit_lens(stories, [])


def test_positions(stories):
    prompt = "Once upon a time, there was a little girl"
    full = tools.logit_lens(stories, prompt, targets="next")
    some = tools.logit_lens(stories, prompt, targets="next", positions=[-2, 3])
    T = len(full.input_ids)
    assert some.positions == [T - 2, 3] and full.positions == list(range(T))
    assert np.allclose(some.probs, full.probs[:, [T - 2, 3]], atol=1e-6)
    assert some.targets == [full.targets[T - 2], full.targets[3]]
    assert np.allclose(some.target_nll, full.target_nll[:, [T - 2, 3]], atol=1e-5)
    assert some.tokens == full.tokens and some.top_tokens[0][1] == full.top_tokens[0][3]
    with pytest.raises(IndexError, match="position 99"):
        tools.logit_lens(stories, prompt, positions=[99])


@pytest.mark.smollm2
def test_smollm2_converges_late(smollm2_path):
    """A real 30-layer model: the lens reads little before layer ~20, then converges (figures in
    docs/tools/logit-lens.md); its last row is the model's own distribution."""
    model = mlxsight.LanguageModel(smollm2_path, dtype="float32")
    prompt = "The capital of France is Paris. The capital of Germany is Berlin. The capital of Italy is Rome."
    r = tools.logit_lens(model, prompt, targets="next")
    nll = np.nanmean(r.target_nll, axis=1)
    print("SmolLM2 lens NLL per layer:", np.round(nll, 2))
    assert nll[:20].min() > 10 and (np.diff(nll[23:]) < 0).all() and nll[-1] < 1.5
    with model.trace(r.input_ids):
        logits = model.lm_head.output.save()
    final = np.exp(np.array(logits[0]) - np.array(logits[0]).max(-1, keepdims=True))
    assert np.abs(r.probs[-1] - final / final.sum(-1, keepdims=True)).max() < 1e-5


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 4), vocab=st.sampled_from([7, 300, 1024, 1100, 4099]), k=st.integers(1, 12),
       levels=st.sampled_from([3, 50, None]), seed=st.integers(0, 2 ** 16))
def test_top_k_ids_is_a_full_sort(rows, vocab, k, levels, seed):
    """The blockwise top-k equals sorting every row (value descending, then id), with ties
    (``levels``: few distinct values) and vocabularies that are no multiple of the block."""
    from mlxsight.tools.lens import top_k_ids

    rng = np.random.default_rng(seed)
    z = rng.normal(size=(rows, 2, vocab)).astype(np.float32)
    if levels is not None:
        z = np.round(z * levels / 4) / levels
    got = top_k_ids(z, k)
    want = np.argsort(-z, axis=-1, kind="stable")[..., :min(k, vocab)]
    assert got.shape == want.shape
    assert np.array_equal(np.take_along_axis(z, got, -1), np.take_along_axis(z, want, -1))
    if levels is None:  # distinct values: the same ids; with ties, any ids of the k largest values
        assert np.array_equal(got, want)


def test_token_strings_follow_the_tokenizer(stories_path):
    """Remembered strings equal decoding each id, and are dropped when the tokenizer changes."""
    from mlxsight.tools.inputs import token_strings

    model = mlxsight.LanguageModel(stories_path, view="mlx")  # its own tokenizer: this test adds a token
    tok = model.tokenizer
    ids = [[1, 403, 13], [300, 13, 500]]
    want = [tok.decode([i]) for row in ids for i in row]
    assert token_strings(model, ids) == want and token_strings(model, ids) == want  # the second: remembered
    before = len(tok)
    tok.add_tokens(["<zz_new>"])
    assert token_strings(model, [before]) == ["<zz_new>"] and token_strings(model, ids) == want


@settings(max_examples=30, deadline=None)
@given(scale=st.sampled_from([0.1, 5.0, 30.0, 200.0]), offset=st.sampled_from([0.0, -70.0, 55.0, 1000.0]),
       seed=st.integers(0, 2 ** 16))
def test_softmax_against_float64(scale, offset, seed):
    """probs and log-probabilities against float64, also where exp(z) alone would overflow or underflow."""
    from mlxsight.tools.lens import softmax_

    z = (np.random.default_rng(seed).normal(size=(3, 700)) * scale + offset).astype(np.float32)
    probs = z.copy()
    log_total, shift = softmax_(probs)  # in place
    z64 = z.astype(np.float64)
    ref = np.exp(z64 - z64.max(-1, keepdims=True))
    ref /= ref.sum(-1, keepdims=True)
    assert np.isfinite(probs).all() and np.allclose(probs, ref, rtol=1e-5, atol=1e-7)
    logp = z64 - shift - log_total[..., None]
    ref_logp = z64 - z64.max(-1, keepdims=True) - np.log(np.exp(z64 - z64.max(-1, keepdims=True)).sum(-1, keepdims=True))
    assert np.allclose(logp, ref_logp, atol=1e-4 * max(1.0, scale / 10))


def _reference_decode(z: np.ndarray, k: int, targets: np.ndarray):
    """Straightforward float64 numpy: softmax, a full stable sort, -log p and rank of each target."""
    z64 = z.astype(np.float64)
    shifted = z64 - z64.max(-1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    order = np.argsort(-z, axis=-1, kind="stable")[:, :min(k, z.shape[-1])]
    valid = targets >= 0
    t = np.where(valid, targets, 0)
    target_logp = logp[np.arange(len(z)), t]
    nll = np.where(valid, -target_logp, np.nan)
    rank = np.where(valid, (z > z[np.arange(len(z)), t][:, None]).sum(-1), -1)
    return np.exp(logp), order, nll, rank


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 40), vocab=st.sampled_from([5, 300, 4099, 20000]), k=st.integers(1, 9),
       scale=st.sampled_from([0.5, 4.0, 40.0]), big=st.sampled_from([0.0, 80.0, -500.0, 3000.0]),
       seed=st.integers(0, 2 ** 16))
def test_decode_rows_against_float64_reference(rows, vocab, k, scale, big, seed):
    """The chunked, threaded decode (probabilities in place, top-k, target NLL and rank) equals a
    straightforward float64 numpy decode, also with rows whose maxima are large (``big`` added to
    every other row) and logits big enough to split into several chunks and threads."""
    from mlxsight.tools.lens import decode_rows

    rng = np.random.default_rng(seed)
    z = (rng.standard_normal((rows, vocab)) * scale).astype(np.float32)
    z[::2] += np.float32(big)
    targets = rng.integers(-1, vocab, rows)
    probs, order, nll, rank = _reference_decode(z, k, targets)
    y = z.copy()
    got = decode_rows(y, k, targets)
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, probs, rtol=2e-5, atol=1e-9)
    # The same values in the same order; equal values (float32 ties, likely once 80 is added) may
    # trade places at the k-th place, as with any partition, so ids are compared through their values.
    np.testing.assert_array_equal(np.take_along_axis(z, got.top_ids, -1), np.take_along_axis(z, order, -1))
    assert all(len(set(row)) == len(row) for row in got.top_ids.tolist())
    np.testing.assert_array_equal(got.target_rank, rank)
    np.testing.assert_allclose(got.target_nll, nll, rtol=1e-5, atol=1e-4 * max(1.0, scale / 10))
    assert decode_rows(z.copy(), k).target_nll is None


def test_chunks_in_threads_compute_what_one_pass_does(monkeypatch):
    """Several chunks over several threads give bit-identical results to one chunk on one thread."""
    from mlxsight.tools import lens as lens_module

    rng = np.random.default_rng(0)
    z = (rng.standard_normal((120, 20000)) * 4).astype(np.float32)
    z[5] += 200  # one row shifted by its maximum, the others not
    targets = rng.integers(-1, 20000, 120)
    assert z.size >= 2 * lens_module.PARALLEL_MIN and 20000 < lens_module.CHUNK_VALUES < z.size // 4
    y_split = z.copy()
    split = lens_module.decode_rows(y_split, 7, targets)
    monkeypatch.setattr(lens_module, "CHUNK_VALUES", z.size)
    monkeypatch.setattr(lens_module, "PARALLEL_MIN", z.size + 1)
    y_one = z.copy()
    one = lens_module.decode_rows(y_one, 7, targets)
    np.testing.assert_array_equal(y_split, y_one)
    np.testing.assert_array_equal(split.top_ids, one.top_ids)
    np.testing.assert_array_equal(split.target_nll, one.target_nll)
    np.testing.assert_array_equal(split.target_rank, one.target_rank)
