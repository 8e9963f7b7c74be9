"""Head scores: how strongly each attention head shows a known pattern (previous token, ...).

Every score is an average of attention weights (see ``head_scores`` for the formulas), computed
from ``attention_patterns``, so it is exact wherever the patterns are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .result import Result

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
