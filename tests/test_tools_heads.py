"""tools.head_scores against the textbook formulas evaluated on transformers' eager attention
weights; prompts with repeats (hypothesis); both backends."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import mlxsight
from mlxsight import tools
from tiny_models import cached_checkpoint


@pytest.fixture(scope="module")
def checkpoint():
    return cached_checkpoint("qwen3")


@pytest.fixture(scope="module")
def eager(checkpoint):
    import torch
    import transformers as tf

    hf = tf.AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=torch.float32,
                                                 attn_implementation="eager").eval()

    def weights(ids):  # [layers, heads, T, T]
        with torch.no_grad():
            return np.stack([a[0].numpy() for a in hf(torch.tensor([ids]), output_attentions=True).attentions])
    return weights


@pytest.fixture(scope="module")
def model(checkpoint):
    return mlxsight.LanguageModel(checkpoint)


def _textbook(A, kind, n):
    """On [BOS] + r + r with len(r) = n (A: [layers, heads, T, T])."""
    T = A.shape[-1]
    if kind == "previous_token":
        return np.mean([A[..., i, i - 1] for i in range(1, T)], axis=0)
    if kind == "first_token":
        return np.mean([A[..., i, 0] for i in range(1, T)], axis=0)
    second = range(n + 1, 2 * n + 1)
    if kind == "duplicate_token":
        return np.mean([A[..., i, i - n] for i in second], axis=0)
    return np.mean([A[..., i, i - n + 1] for i in second], axis=0)


@pytest.mark.parametrize("kind", tools.heads.KINDS)
def test_repeated_random_tokens_match_textbook_formulas(model, eager, kind):
    n = 12
    scores = tools.head_scores(model, kind, seq_len=n, batch=1, seed=3)
    ids = scores.input_ids
    assert len(ids) == 2 * n + 1 and ids[0] == model.tokenizer.bos_token_id and ids[1:n + 1] == ids[n + 1:]
    assert len(set(ids[1:n + 1])) == n and not set(ids[1:]) & set(model.tokenizer.all_special_ids)
    ref = _textbook(eager(ids), kind, n)
    assert scores.scores.shape == (4, 4) and np.abs(scores.scores - ref).max() < 1e-5
    assert scores.kind == kind and scores.top(1)[0][2] == pytest.approx(ref.max(), abs=1e-5)


def _brute(A, ids, kind):
    T = len(ids)
    per_row = []
    for i in range(1, T):
        if kind == "previous_token":
            per_row.append(A[..., i, i - 1])
        elif kind == "first_token":
            per_row.append(A[..., i, 0])
        elif kind == "duplicate_token":
            js = [j for j in range(i) if ids[j] == ids[i]]
            if js:
                per_row.append(sum(A[..., i, j] for j in js))
        else:
            js = [p + 1 for p in range(i) if ids[p] == ids[i] and p + 1 < i]
            if js:
                per_row.append(sum(A[..., i, j] for j in js))
    return np.mean(per_row, axis=0) if per_row else np.zeros(A.shape[:2])


@settings(max_examples=12, deadline=None)
@given(ids=st.lists(st.integers(5, 9), min_size=2, max_size=14), kind=st.sampled_from(tools.heads.KINDS))
def test_prompts_with_repeats(model, eager, ids, kind):
    ids = [0] + ids
    scores = tools.head_scores(model, kind, prompt=ids)
    assert np.abs(scores.scores - _brute(eager(ids), ids, kind)).max() < 1e-5


def test_averages_over_sequences_and_limits_layers(model):
    full = tools.head_scores(model, "induction", seq_len=8, batch=3, seed=1)
    parts = [tools.head_scores(model, "induction", prompt=ids)
             for ids in tools.heads._repeated_random(tools.standardize(model), 8, 3, 1)]
    assert np.allclose(full.scores, np.mean([p.scores for p in parts], axis=0), atol=1e-6)
    some = tools.head_scores(model, "induction", seq_len=8, batch=3, seed=1, layers=[2])
    assert np.allclose(some.scores[2], full.scores[2]) and (some.scores[[0, 1, 3]] == 0).all()
    with pytest.raises(ValueError, match="kind must be one of"):
        tools.head_scores(model, "copying")


def test_both_backends(checkpoint, model):
    import nnsight
    from transformers import AutoTokenizer

    theirs = nnsight.LanguageModel(str(checkpoint), tokenizer=AutoTokenizer.from_pretrained(str(checkpoint)))
    for kind in ("previous_token", "induction"):
        a, b = tools.head_scores(model, kind, seq_len=10, batch=2), tools.head_scores(theirs, kind, seq_len=10, batch=2)
        assert a.input_ids == b.input_ids and np.abs(a.scores - b.scores).max() < 1e-5


def test_stories260k(stories):
    """The bundled model has clear previous-token heads and only weak induction (SOURCE.md)."""
    prev = tools.head_scores(stories, "previous_token")
    induction = tools.head_scores(stories, "induction")
    assert prev.scores.shape == (5, 8) and prev.top(1)[0][:2] == (3, 6) and prev.top(1)[0][2] > 0.8
    assert induction.scores.max() < 0.15


@pytest.mark.smollm2
def test_smollm2_induction_heads(smollm2_path):
    """SmolLM2-135M's known induction heads (assets/smollm2/SOURCE.md: 18.6, 17.3, 17.4, 23.2, 23.7),
    found with weights equal to transformers' eager attention on the same checkpoint (float32)."""
    import torch
    import transformers as tf

    model = mlxsight.LanguageModel(smollm2_path, dtype="float32")
    scores = tools.head_scores(model, "induction", seq_len=40, batch=4)
    top = scores.top(5)
    print("SmolLM2 induction heads:", [(l, h, round(s, 3)) for l, h, s in top])
    assert {(18, 6), (17, 3), (17, 4)} <= {(l, h) for l, h, _ in top} and top[0][2] > 0.8
    hf = tf.AutoModelForCausalLM.from_pretrained(str(smollm2_path), dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    ours = tools.attention_patterns(model, scores.input_ids, layers=[17, 18])
    with torch.no_grad():
        ref = hf(torch.tensor([scores.input_ids]), output_attentions=True).attentions
    assert np.abs(ours.weights - np.stack([ref[17][0].numpy(), ref[18][0].numpy()])).max() < 1e-4
