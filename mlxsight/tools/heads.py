"""Head scores: how strongly each attention head shows a known pattern (previous token, ...).

Every score is an average of attention weights (see ``head_scores`` for the formulas), computed
from ``attention_patterns``, so it is exact wherever the patterns are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .attention import attention_patterns
from .lens import as_standardized, layer_indices, token_ids
from .result import Result
from .standardize import Standardized

KINDS = ("previous_token", "duplicate_token", "induction", "first_token")


@dataclass(repr=False)
class HeadScores(Result):
    """One score per head for one pattern kind, in ``[0, 1]``.

    Fields:
        scores: ``[n_layers, n_heads]`` float32; ``scores[l, h]`` for head ``h`` of layer ``l``.
        kind: one of ``"previous_token"``, ``"duplicate_token"``, ``"induction"``, ``"first_token"``.
        tokens: the tokens the scores were measured on (for induction: a random sequence repeated).
        input_ids: their ids.
    """

    scores: np.ndarray
    kind: str
    tokens: list[str]
    input_ids: list[int]

    def top(self, k: int = 5) -> list[tuple[int, int, float]]:
        """The ``k`` highest-scoring heads as ``(layer, head, score)``, best first."""
        flat = np.argsort(-self.scores, axis=None, kind="stable")[:k]
        return [(int(i // self.scores.shape[1]), int(i % self.scores.shape[1]), float(self.scores.flat[i]))
                for i in flat]


def head_scores(model: Any, kind: str, prompt: str | list[int] | None = None, *, seq_len: int = 32,
                batch: int = 4, seed: int = 0, layers: list[int] | None = None) -> HeadScores:
    """Score every head for one attention pattern, from its exact attention weights ``A``.

    With ``prompt=None`` the data is ``batch`` sequences of ``[BOS] + r + r``: ``r`` holds
    ``seq_len`` distinct random non-special tokens, repeated once (the standard induction set-up);
    scores are averaged over the sequences. Otherwise the prompt's tokens ``t`` are used. For a
    query position ``i`` (``i >= 1``; position 0 has no choice):

    - ``previous_token``: mean over ``i`` of ``A[i, i-1]``.
    - ``first_token``: mean over ``i`` of ``A[i, 0]`` (the BOS / attention-sink position).
    - ``duplicate_token``: mean over positions ``i`` whose token occurred before of
      ``sum_{j < i, t_j = t_i} A[i, j]`` (attention to earlier copies of the same token).
    - ``induction``: mean over positions ``i`` whose token occurred before at some ``p < i - 1``
      of ``sum_{p: t_p = t_i, p + 1 < i} A[i, p + 1]`` (attention to the token that followed an
      earlier copy). On ``[BOS] + r + r`` it is ``A[i, i - seq_len + 1]`` averaged over the second
      copy, and ``duplicate_token`` is ``A[i, i - seq_len]``.

    ``layers`` limits the layers scored (the others stay 0); the rows of ``scores`` are always
    indexed by decoder layer.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    std = as_standardized(model)
    rows = [token_ids(std, prompt)] if prompt is not None else _repeated_random(std, seq_len, batch, seed)
    chosen = layer_indices(layers, std.n_layers)
    patterns = attention_patterns(std, rows, layers=chosen)
    scores = np.zeros((std.n_layers, std.n_heads), np.float32)
    for pattern, ids in zip(patterns, rows):
        selector = _selector(kind, ids)
        scores[chosen] += (pattern.weights * selector).sum(axis=(-1, -2)) / max(selector.any(-1).sum(), 1)
    scores /= len(rows)
    return HeadScores(scores=scores, kind=kind, tokens=patterns[0].tokens, input_ids=list(rows[0]))


def _selector(kind: str, ids: list[int]) -> np.ndarray:
    """``[T, T]`` 0/1 matrix ``S`` with ``score = sum(A * S) / (rows of S with any 1)``."""
    T = len(ids)
    t = np.asarray(ids)
    s = np.zeros((T, T), np.float32)
    i = np.arange(1, T)
    if kind == "previous_token":
        s[i, i - 1] = 1
    elif kind == "first_token":
        s[i, 0] = 1
    else:
        same = (t[:, None] == t[None, :]) & (np.arange(T)[None, :] < np.arange(T)[:, None])  # [i, p]: p < i
        if kind == "duplicate_token":
            s = same.astype(np.float32)
        else:  # induction: the token after each earlier copy p, if p + 1 < i
            s[:, 1:] = same[:, :-1] & (np.arange(1, T)[None, :] < np.arange(T)[:, None])
    return s


def _repeated_random(std: Standardized, seq_len: int, batch: int, seed: int) -> list[list[int]]:
    tokenizer = std.model.tokenizer
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    pool = np.array([i for i in range(std.vocab) if i not in special])
    if seq_len > len(pool):
        raise ValueError(f"seq_len {seq_len} exceeds the {len(pool)} non-special tokens")
    rng = np.random.default_rng(seed)
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    out = []
    for _ in range(batch):
        r = rng.choice(pool, size=seq_len, replace=False).tolist()
        out.append(bos + r + r)
    return out
