"""Attention weights, recomputed exactly from queries and keys.

MLX's fused ``scaled_dot_product_attention`` never materialises the ``[B, H, T, S]`` weights. They
are recomputed here from the same (RoPE-applied) queries and keys, scale and mask, in float32:
``softmax(q @ k^T * scale + mask)``. Inside a trace, pass proxies (e.g. from ``.source``): the
computation is recorded like any other operation. (An HF-view model loaded or switched to
``attn_implementation="eager"`` returns them directly: ``self_attn.output[1]``.)
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx

from .proxy import apply


def weights(queries: Any, keys: Any, scale: float, mask: Any = "causal") -> Any:
    """``[B, H, T, S]`` attention probabilities; grouped key heads are repeated to match queries.

    ``mask`` is ``"causal"``, ``None``, a boolean array (True = attend) or an additive array."""
    return apply(_weights, queries, keys, scale, mask)


def _weights(queries: mx.array, keys: mx.array, scale: float, mask: Any) -> mx.array:
    q = queries.astype(mx.float32)
    k = keys.astype(mx.float32)
    repeats = q.shape[1] // k.shape[1]
    if repeats > 1:
        k = mx.repeat(k, repeats, axis=1)
    scores = (q * scale) @ k.swapaxes(-1, -2)
    T, S = scores.shape[-2:]
    if isinstance(mask, str) and mask == "causal":
        allowed = mx.arange(S)[None] <= mx.arange(S - T, S)[:, None]
        scores = mx.where(allowed, scores, -mx.inf)
    elif isinstance(mask, mx.array):
        scores = mx.where(mask, scores, -mx.inf) if mask.dtype == mx.bool_ else scores + mask
    return mx.softmax(scores, axis=-1)
