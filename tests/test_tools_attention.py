"""tools.attention_patterns against transformers' eager attention weights (output_attentions=True)
on every adapted family: RoPE variants, GQA, query/key norms, soft-capping, sliding windows, padded
batches; the plain mlx-lm view; and the nnsight backend on the same checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

import mlxsight
from mlxsight import tools
from tiny_models import ARCHS, cached_checkpoint

TOL = 2e-5
PROMPTS = ["The cat saw a red ball in the park and the dog found it.", "Hello, world!"]


def _eager(path, ids, mask=None):
    """transformers' own weights: [layers, B, heads, T, T]."""
    import torch
    import transformers as tf

    hf = tf.AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, attn_implementation="eager").eval()
    kw = {}
    if mask is not None:  # positions count from each row's first real token, as nnsight passes them
        m = torch.tensor(mask)
        kw = {"attention_mask": m, "position_ids": (m.cumsum(-1) - 1).clamp(min=0)}
    with torch.no_grad():
        out = hf(torch.tensor(ids), output_attentions=True, **kw)
    return np.stack([a.numpy() for a in out.attentions])


def _compare(path, model):
    single = tools.attention_patterns(model, PROMPTS[0])
    ref = _eager(path, [single.input_ids])[:, 0]
    assert np.asarray(single).shape == ref.shape == (4, 4, len(single.input_ids), len(single.input_ids))
    diff = np.abs(np.asarray(single) - ref).max()
    # a left-padded batch: each prompt's weights equal transformers' on the padded batch, real rows
    batch = tools.attention_patterns(model, PROMPTS)
    T = max(len(r.input_ids) for r in batch)
    pad = model.tokenizer.pad_token_id
    ids = [[pad] * (T - len(r.input_ids)) + r.input_ids for r in batch]
    mask = [[0] * (T - len(r.input_ids)) + [1] * len(r.input_ids) for r in batch]
    ref_batch = _eager(path, ids, mask)
    for b, r in enumerate(batch):
        n = len(r.input_ids)
        diff = max(diff, np.abs(r.weights - ref_batch[:, b, :, T - n:, T - n:]).max())
    assert np.array_equal(batch[0].weights, single.weights) or np.abs(batch[0].weights - single.weights).max() < TOL
    assert np.allclose(np.asarray(single).sum(-1), 1, atol=1e-5)
    return diff


@pytest.mark.parametrize("arch", ARCHS)
def test_matches_transformers_eager(arch):
    path = cached_checkpoint(arch)
    diff = _compare(path, mlxsight.LanguageModel(path))
    print(f"{arch}: max |weights - transformers eager| = {diff:.1e}")
    assert diff < TOL


@pytest.mark.parametrize("arch", ["mistral", "gemma2", "gemma3"])
def test_sliding_windows(arch):
    path = cached_checkpoint(arch, sliding_window=4)
    diff = _compare(path, mlxsight.LanguageModel(path))
    r = tools.attention_patterns(mlxsight.LanguageModel(path), PROMPTS[0], layers=[0])
    assert (r.weights[0, :, 10, :6] == 0).all()  # a sliding layer: nothing beyond the window of 4
    print(f"{arch} (window 4): max diff {diff:.1e}")
    assert diff < TOL


@pytest.mark.parametrize("arch", ["qwen3", "gpt_neox"])
def test_mlx_view(arch):
    path = cached_checkpoint(arch)
    ours = tools.attention_patterns(mlxsight.LanguageModel(path, view="mlx"), PROMPTS[0], layers=[1, 3])
    ref = _eager(path, [ours.input_ids])[[1, 3], 0]
    assert ours.layers == [1, 3] and np.abs(ours.weights - ref).max() < TOL
    assert np.array_equal(ours.head(3, 2), ours.weights[1, 2])


@pytest.mark.parametrize("arch", ["llama", "gemma2", "phi3"])
def test_both_backends(arch):
    import nnsight
    from transformers import AutoTokenizer

    path = str(cached_checkpoint(arch))
    theirs_model = nnsight.LanguageModel(path, tokenizer=AutoTokenizer.from_pretrained(path))
    before = theirs_model.config._attn_implementation
    ours = tools.attention_patterns(mlxsight.LanguageModel(path), PROMPTS)
    theirs = tools.attention_patterns(theirs_model, PROMPTS)
    assert theirs_model.config._attn_implementation == before  # restored
    for a, b in zip(ours, theirs):
        assert a.input_ids == b.input_ids and a.tokens == b.tokens and a.layers == b.layers
        assert np.abs(a.weights - b.weights).max() < TOL
