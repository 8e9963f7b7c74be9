"""The logit lens: each decoder layer's residual stream read through the final norm and unembedding.

``logit_lens(model, prompt)`` traces once, saves the output of every requested decoder layer and
decodes all of them in one batched call of the model's own final norm, unembedding and (Gemma 2)
logit soft-capping. ``TunedLens`` (``tuned_lens.py``) returns the same ``LensResult``, with a
learned affine translator applied to each layer's output first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .result import Result


@dataclass(repr=False)
class LensResult(Result):
    """Per layer x position next-token distributions decoded from the residual stream.

    Rows follow ``layers``: row ``i`` is the output of decoder layer ``layers[i]`` (``-1`` = the
    input of layer 0, i.e. the embeddings, present when ``include_embeddings=True``) through the final
    norm and unembedding (and, for ``kind="tuned"``, that layer's translator first). The row of the
    last layer equals the model's own output distribution.

    Fields:
        probs: ``[rows, T, vocab]`` float32 probabilities.
        layers: decoder layer index of each row (``-1``: embeddings).
        labels: a display label per row (``"embeddings"``, ``"0"``, ``"1"``, ...).
        tokens: the input tokens as strings, ``T`` of them.
        input_ids: the input token ids.
        top_ids, top_probs: ``[rows, T, k]`` the ``k`` most probable ids per cell, most probable first.
        top_tokens: ``[rows][T][k]`` those ids as strings.
        targets: the target id per position (given to the lens), else ``None``.
        target_nll: ``[rows, T]`` ``-log p(target)`` per cell, else ``None``.
        target_rank: ``[rows, T]`` the target's rank (0 = most probable) per cell, else ``None``.
        kind: ``"logit"`` or ``"tuned"``.
    """

    probs: np.ndarray
    layers: list[int]
    labels: list[str]
    tokens: list[str]
    input_ids: list[int]
    top_ids: np.ndarray
    top_probs: np.ndarray
    top_tokens: list[list[list[str]]]
    targets: list[int] | None = None
    target_nll: np.ndarray | None = None
    target_rank: np.ndarray | None = None
    kind: str = "logit"

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.probs if dtype is None else self.probs.astype(dtype)
