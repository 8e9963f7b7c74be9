"""Attention patterns: every head's ``[T, T]`` attention weights, as the model computes them.

MLX's fused attention never materialises the weights, so they are recomputed from each layer's own
queries and keys (after RoPE and any query/key norms), scale, soft-capping and mask (causal,
sliding window, padding), in float32, from the values the model passes its attention modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .result import Result


@dataclass(repr=False)
class AttentionPatterns(Result):
    """Attention weights of the chosen layers; ``np.asarray(result)`` is ``weights``.

    Fields:
        weights: ``[layers, heads, T, T]`` float32; ``weights[l, h, i, j]`` is how much query
            position ``i`` attends to key position ``j`` in head ``h`` of layer ``layers[l]``
            (each row sums to 1 over the keys it may see).
        layers: decoder layer index of each entry of ``weights``.
        tokens: the input tokens as strings, ``T`` of them.
        input_ids: the input token ids.
    """

    weights: np.ndarray
    layers: list[int]
    tokens: list[str]
    input_ids: list[int]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.weights if dtype is None else self.weights.astype(dtype)

    def head(self, layer: int, head: int) -> np.ndarray:
        """``[T, T]`` weights of one head; ``layer`` is a decoder layer index (one of ``layers``)."""
        return self.weights[self.layers.index(layer), head]
