"""Small hand-built toolkit results for the view tests, with hostile token text (``<script>`` etc.)."""

from __future__ import annotations

import numpy as np

from mlxsight.tools import (AttentionPatterns, FeatureActivations, FeatureAttribution, HeadScores, LensResult,
                            PatchingResult, ScaleSearch, SteeringResult, SteeringVector, TopContexts)

TOKENS = ["<s>", "\u2581Once", "\u2581upon", "<script>alert(1)</script>", "\u2581a", "&amp;", "\u2581time", "\n"]


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def lens(seed=0, n_layers=4, vocab=12, k=3):
    rng = np.random.default_rng(seed)
    T = len(TOKENS)
    probs = softmax(rng.normal(size=(n_layers, T, vocab)) * 3).astype(np.float32)
    words = [f"w{i}" for i in range(vocab - 2)] + ["</script><b>x", "\u2581the"]
    top_ids = np.argsort(-probs, axis=-1, kind="stable")[..., :k]
    targets = rng.integers(0, vocab, size=T)
    p_target = np.take_along_axis(probs, np.broadcast_to(targets[None, :, None], (n_layers, T, 1)), -1)[..., 0]
    rank = (probs > p_target[..., None]).sum(-1)
    return LensResult(
        probs=probs, layers=list(range(n_layers)), labels=[str(i) for i in range(n_layers)], tokens=list(TOKENS),
        input_ids=list(range(T)), top_ids=top_ids, top_probs=np.take_along_axis(probs, top_ids, -1),
        top_tokens=[[[words[i] for i in row] for row in layer] for layer in top_ids.tolist()],
        targets=targets.tolist(), target_nll=-np.log(p_target), target_rank=rank, kind="logit")


def attention(seed=0, n_layers=3, n_heads=4, tokens=TOKENS):
    rng = np.random.default_rng(seed)
    T = len(tokens)
    scores = rng.normal(size=(n_layers, n_heads, T, T)) * 2
    scores = np.where(np.tril(np.ones((T, T), bool)), scores, -np.inf)
    return AttentionPatterns(weights=softmax(scores).astype(np.float32), layers=list(range(n_layers)),
                             tokens=list(tokens), input_ids=list(range(T)))


def heads(seed=0, n_layers=4, n_heads=6):
    rng = np.random.default_rng(seed)
    return HeadScores(scores=rng.uniform(size=(n_layers, n_heads)).astype(np.float32), kind="induction",
                      tokens=list(TOKENS), input_ids=list(range(len(TOKENS))))


def patching(seed=0, n_layers=4):
    rng = np.random.default_rng(seed)
    T = len(TOKENS)
    return PatchingResult(scores=rng.normal(size=(n_layers, T)).astype(np.float32), clean=2.5, corrupted=-1.0,
                          layers=list(range(n_layers)), positions=list(range(T)), heads=None, component="resid",
                          tokens=list(TOKENS), metric="logit_diff")


def patching_heads(seed=0, n_layers=3, n_heads=4):
    rng = np.random.default_rng(seed)
    T = len(TOKENS)
    return PatchingResult(scores=rng.normal(size=(n_layers, T, n_heads)).astype(np.float32), clean=1.0, corrupted=0.0,
                          layers=list(range(n_layers)), positions=list(range(T)), heads=list(range(n_heads)),
                          component="heads", tokens=list(TOKENS), metric="logit_diff")


def steering():
    prompt = "Once upon a time"
    completions = [" there was a sad <script>alert(1)</script> dog.", " there was a girl.",
                   " there was a happy & kind girl.", " happy happy happy."]
    return SteeringResult(prompt=prompt, scales=[-4.0, 0.0, 4.0, 8.0], texts=[prompt + c for c in completions],
                          completions=completions, token_ids=[[1, 2]] * 4, layers=[2], positions="all", vector_norm=1.5)


def sae(seed=0, n_features=6):
    rng = np.random.default_rng(seed)
    acts = np.maximum(rng.normal(size=(len(TOKENS), n_features)), 0).astype(np.float32)
    return FeatureActivations(acts=acts, feature_ids=np.array([10 * i + 3 for i in range(n_features)]),
                              tokens=list(TOKENS), prompt="".join(TOKENS))


def attribution(seed=0, d_sae=30):
    rng = np.random.default_rng(seed)
    return FeatureAttribution(scores=rng.normal(size=(len(TOKENS), d_sae)).astype(np.float32) * 0.3,
                              error_scores=rng.normal(size=len(TOKENS)).astype(np.float32) * 0.1,
                              tokens=list(TOKENS), metric=1.25)


def contexts(seed=0, n_features=3, k=4, window=5):
    rng = np.random.default_rng(seed)
    values = -np.sort(-rng.uniform(1, 5, size=(n_features, k)), axis=1).astype(np.float32)
    values[2, 2:] = -np.inf  # a feature that fired only twice
    windows = [[[TOKENS[(r + i + j) % len(TOKENS)] for i in range(window)] for r in range(k)] for j in range(n_features)]
    acts = [[np.where(np.arange(window) == 2, values[j, r], rng.uniform(0, 1, window)).astype(np.float32)
             for r in range(k)] for j in range(n_features)]
    return TopContexts(feature_ids=np.array([7, 42, 99]), values=values, text_ids=rng.integers(0, 9, (n_features, k)),
                       positions=rng.integers(0, 30, (n_features, k)), windows=windows, window_acts=acts,
                       window_offsets=np.full((n_features, k), 2))


def scale_search():
    return ScaleSearch(scale=3.0, value=0.52, target=0.5, increasing=True, metric="probability",
                       evaluations=[(0.0, 0.1), (16.0, 0.9), (8.0, 0.7), (4.0, 0.6), (2.0, 0.3), (3.0, 0.52)])


def steering_vector():
    return SteeringVector(vector=np.linspace(-1, 1, 64).astype(np.float32), layer=2, position="mean", n_pairs=3)
