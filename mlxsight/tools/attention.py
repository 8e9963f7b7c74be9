"""Attention patterns: every head's ``[T, T]`` attention weights, as the model computes them.

MLX's fused attention never materialises the weights, so they are recomputed from each layer's own
queries and keys (after RoPE and any query/key norms), scale, soft-capping and mask (causal,
sliding window, padding), in float32, from the values the model passes its attention modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np

from ..adapters.base import apply_rotary, attention_weights, split_heads
from . import backend
from .inputs import as_standardized, layer_indices, token_ids, token_strings
from .result import Result
from .standardize import Standardized, standardize


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


def attention_patterns(model: Any, prompt: str | list[int] | list[str] | list[list[int]],
                       layers: list[int] | None = None) -> "AttentionPatterns | list[AttentionPatterns]":
    """Every head's attention weights at the chosen decoder layers (default all).

    ``prompt`` is text or token ids; a list of them runs as one left-padded batch (with the
    attention mask, as nnsight pads) and gives one ``AttentionPatterns`` per prompt, cut to its
    own tokens (equal to running it alone).

    mlxsight models (HF view): each attention module's inputs are read in one trace (hidden
    states, rotary ``(cos, sin)``, the mask it was given: causal, sliding window, padding), and
    the weights are recomputed from the module's own projections, query/key norms and RoPE, with
    its scale and Gemma 2's logit soft-capping. A ``view="mlx"`` model is read through an HF view
    of the same arrays. nnsight models run with transformers' eager attention for the trace (the
    model's setting is restored afterwards) and its returned weights are read.
    """
    std = as_standardized(model)
    single = isinstance(prompt, str) or _is_ids(prompt)
    batch = [prompt] if single else list(prompt)
    rows = [token_ids(std, p) for p in batch]
    layer_list = layer_indices(layers, std.n_layers)
    ids, mask = _left_pad(std, rows)
    inputs = {"input_ids": ids, "attention_mask": mask}
    if std.backend == backend.TORCH:
        weights = _torch_weights(std, inputs, layer_list)
    else:
        weights = _mlx_weights(_hf_twin(std), inputs, layer_list)
    T = max(len(r) for r in rows)
    out = [AttentionPatterns(weights=weights[:, b, :, T - len(r):, T - len(r):], layers=list(layer_list),
                             tokens=token_strings(std.model, r), input_ids=list(r)) for b, r in enumerate(rows)]
    return out[0] if single else out


def _is_ids(prompt: Any) -> bool:
    return isinstance(prompt, (list, tuple)) and bool(prompt) and all(isinstance(i, (int, np.integer)) for i in prompt)


def _left_pad(std: Standardized, rows: list[list[int]]) -> tuple[list[list[int]], list[list[int]]]:
    tokenizer = std.model.tokenizer
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    T = max(len(r) for r in rows)
    return ([[pad] * (T - len(r)) + r for r in rows], [[0] * (T - len(r)) + [1] * len(r) for r in rows])


def _hf_twin(std: Standardized) -> Standardized:
    """The model itself in the HF view; a ``view="mlx"`` model re-wrapped in one (same arrays)."""
    model = std.model
    if getattr(model, "view", "hf") == "hf":
        return std
    from ..model import LanguageModel

    twin = LanguageModel(model.mlx_model, tokenizer=model.tokenizer, config=dict(vars(model.config)), view="hf")
    if twin.view != "hf":
        raise NotImplementedError(f"attention_patterns has no HF view for model_type {std.family!r}")
    return standardize(twin)


def _torch_weights(std: Standardized, inputs: dict, layers: list[int]) -> np.ndarray:
    import torch

    model = backend.loaded(std.model)  # dispatching rebuilds the model from its config: do it first
    previous = model.config._attn_implementation
    tensors = {k: torch.tensor(v) for k, v in inputs.items()}
    try:
        if previous != "eager":
            model.set_attn_implementation("eager")
        saved = backend.run(model, tensors, lambda _: [std.attention[i].output[1] for i in layers])
    finally:
        if model.config._attn_implementation != previous:
            model.set_attn_implementation(previous)
    if any(w is None for w in saved):
        raise RuntimeError("transformers returned no attention weights under attn_implementation='eager'")
    return np.stack([backend.to_numpy(w, np.float32) for w in saved])


def _mlx_weights(std: Standardized, inputs: dict, layers: list[int]) -> np.ndarray:
    saved = backend.run(std.model, inputs, lambda _: [std.attention[i].inputs for i in layers])
    out = []
    for i, (args, kwargs) in zip(layers, saved):
        attn = std.attention[i]
        hidden = args[0] if args else kwargs["hidden_states"]
        q, k = queries_keys(attn, hidden, kwargs.get("position_embeddings"))
        w = weights(q, k, attn.scaling, kwargs.get("attention_mask"), getattr(attn, "attn_logit_softcapping", None))
        out.append(np.array(w))
    return np.stack(out)


def queries_keys(attn: Any, hidden: mx.array, position_embeddings: tuple | None) -> tuple[mx.array, mx.array]:
    """``[B, H, T, hd]`` queries and ``[B, KV, T, hd]`` keys of an HF-view attention module, as its
    forward computes them: fused or separate projections, query/key norms (per head: Qwen 3,
    Gemma 3; over the whole projection: OLMo 2) and RoPE (partial rotary dims pass through)."""
    H = attn.num_heads
    KV = getattr(attn, "num_key_value_heads", H)
    if hasattr(attn, "c_attn"):  # GPT-2: one fused projection, no RoPE
        q, k, _ = mx.split(attn.c_attn(hidden), 3, axis=-1)
        q, k = split_heads(q, H), split_heads(k, H)
    elif hasattr(attn, "query_key_value"):  # GPT-NeoX: [B, T, H, 3 * hd] interleaved per head
        q, k, _ = mx.split(split_heads(attn.query_key_value(hidden), H), 3, axis=-1)
    elif hasattr(attn, "qkv_proj"):  # Phi-3: q | k | v along the last axis
        qkv, hd = attn.qkv_proj(hidden), attn.head_dim
        q, k = split_heads(qkv[..., :H * hd], H), split_heads(qkv[..., H * hd:(H + KV) * hd], KV)
    else:
        q, k = attn.q_proj(hidden), attn.k_proj(hidden)
        whole = hasattr(attn, "q_norm") and attn.q_norm.weight.shape[-1] == q.shape[-1] != q.shape[-1] // H
        if whole:  # OLMo 2 normalises the whole projection, before the head split
            q, k = attn.q_norm(q), attn.k_norm(k)
        q, k = split_heads(q, H), split_heads(k, KV)
        if hasattr(attn, "q_norm") and not whole:
            q, k = attn.q_norm(q), attn.k_norm(k)
    if position_embeddings is not None:
        cos, sin = position_embeddings
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    return q, k


def weights(q: mx.array, k: mx.array, scale: float, mask: mx.array | None = None,
            softcap: float | None = None) -> mx.array:
    """``[B, H, T, S]`` float32 attention weights as transformers' eager attention computes them,
    from float32 ``q`` and ``k`` (see ``adapters.base.attention_weights``)."""
    return attention_weights(q.astype(mx.float32), k.astype(mx.float32), scale, mask, softcap)
