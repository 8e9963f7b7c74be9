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

from . import backend
from .result import Result
from .standardize import Standardized, standardize


@dataclass(repr=False)
class LensResult(Result):
    """Per layer x position next-token distributions decoded from the residual stream.

    Rows follow ``layers``: row ``i`` is the output of decoder layer ``layers[i]`` (``-1`` = the
    input of layer 0, i.e. the embeddings, present when ``include_embeddings=True``) through the final
    norm and unembedding (and, for ``kind="tuned"``, that layer's translator first). The row of the
    last layer equals the model's own output distribution.

    Fields:
        probs: ``[rows, P, vocab]`` float32 probabilities (``P`` positions, by default all ``T``).
        layers: decoder layer index of each row (``-1``: embeddings).
        labels: a display label per row (``"embeddings"``, ``"0"``, ``"1"``, ...).
        tokens: the input tokens as strings, ``T`` of them.
        input_ids: the input token ids.
        positions: the input position of each of the ``P`` columns (default ``0..T-1``).
        top_ids, top_probs: ``[rows, P, k]`` the ``k`` most probable ids per cell, most probable first.
        top_tokens: ``[rows][P][k]`` those ids as strings.
        targets: the target id per column (``-1``: none), else ``None``.
        target_nll: ``[rows, P]`` ``-log p(target)`` per cell, else ``None``.
        target_rank: ``[rows, P]`` the target's rank (0 = most probable) per cell, else ``None``.
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
    positions: list[int] | None = None

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.probs if dtype is None else self.probs.astype(dtype)


def logit_lens(model: Any, prompt: str | list[int], layers: list[int] | None = None, top_k: int = 5,
               targets: list[int] | str | None = None, include_embeddings: bool = False,
               positions: list[int] | None = None) -> LensResult:
    """Decode every requested decoder layer's output with the model's final norm and unembedding.

    Args:
        model: an mlxsight or nnsight language model.
        prompt: text (tokenized with the model's tokenizer, special tokens included) or token ids.
        layers: decoder layer indices (negative ones count from the end); default all, in order.
        top_k: how many most probable tokens to keep per cell.
        targets: a target id per position (``None``/``-1`` for none) to score, or ``"next"`` for
            the next input token at each position (none at the last).
        include_embeddings: add a first row decoding the input of layer 0 (the embeddings).
        positions: decode only these input positions (negative ones count from the end), e.g.
            ``[-1]`` for the next-token prediction; ``targets`` still has one entry per input token.

    One trace saves the layer outputs; one batched call of the final norm and unembedding (with
    Gemma 2's soft-capping, tied or untied output matrix) decodes them all.
    """
    std = as_standardized(model)
    ids = token_ids(model, prompt)
    rows = layer_indices(layers, std.n_layers)
    columns = position_indices(positions, len(ids))
    hidden = read_residuals(std, ids, rows, include_embeddings, columns)
    with backend.no_grad(std.model):
        logits = std.logits(hidden)
    return decode(std, logits, ids, ([-1] if include_embeddings else []) + rows, top_k, targets, "logit", columns)


# -- shared by the logit and tuned lenses ---------------------------------------------------------

def as_standardized(model: Any) -> Standardized:
    return model if isinstance(model, Standardized) else standardize(model)


def token_ids(model: Any, prompt: str | list[int]) -> list[int]:
    """The prompt's token ids: text through the model's tokenizer, ids as given."""
    model = getattr(model, "model", model) if isinstance(model, Standardized) else model
    if isinstance(prompt, str):
        return [int(i) for i in model.tokenizer(prompt)["input_ids"]]
    ids = np.asarray(prompt).reshape(-1).tolist() if not isinstance(prompt, list) else prompt
    if not ids or not all(isinstance(i, (int, np.integer)) for i in ids):
        raise TypeError("prompt must be text or a non-empty list of token ids")
    return [int(i) for i in ids]


def layer_indices(layers: list[int] | int | None, n_layers: int) -> list[int]:
    """Requested layers as sorted, distinct, non-negative indices (the order a trace reads them)."""
    if layers is None:
        return list(range(n_layers))
    layers = [layers] if isinstance(layers, (int, np.integer)) else list(layers)
    out = set()
    for layer in layers:
        index = int(layer) + n_layers if layer < 0 else int(layer)
        if not 0 <= index < n_layers:
            raise IndexError(f"layer {layer} out of range for a model with {n_layers} layers")
        out.add(index)
    return sorted(out)


def position_indices(positions: list[int] | None, T: int) -> list[int]:
    """Requested positions as non-negative indices, in the order given."""
    if positions is None:
        return list(range(T))
    out = []
    for p in positions:
        if not -T <= int(p) < T:
            raise IndexError(f"position {p} out of range for a prompt of {T} tokens")
        out.append(int(p) % T)
    return out


def read_residuals(std: Standardized, ids: list[int], rows: list[int], include_embeddings: bool,
                   positions: list[int]) -> Any:
    """``[rows, P, d_model]`` backend tensor: the residual stream after each layer in ``rows``."""
    def read(_: Any) -> list:
        out = [backend.first(std.layers[0].input)] if include_embeddings else []
        return out + [backend.first(std.layers[i].output) for i in rows]

    saved = backend.run(std.model, ids, read)
    hidden = backend.stack([h[0] for h in saved])
    if positions != list(range(len(ids))):
        hidden = hidden[:, backend.from_numpy(std.model, np.asarray(positions, np.int64))]
    return hidden


def token_strings(model: Any, ids: Any) -> list[str]:
    """Each id decoded on its own (one string per id), through a per-call cache."""
    tokenizer = model.tokenizer
    flat = np.asarray(ids).reshape(-1).tolist()
    unique = sorted(set(flat))
    decoded = dict(zip(unique, tokenizer.batch_decode([[i] for i in unique])))
    return [decoded[i] for i in flat]


def decode(std: Standardized, logits: Any, ids: list[int], layers: list[int], top_k: int,
           targets: list[int] | str | None, kind: str, positions: list[int]) -> LensResult:
    """A ``LensResult`` from ``[rows, P, vocab]`` logits (a backend tensor) at input ``positions``."""
    with backend.no_grad(std.model):
        logp = backend.to_numpy(backend.log_softmax(logits), np.float32)
    probs = np.exp(logp)
    k = min(top_k, probs.shape[-1])
    top_ids = np.argpartition(-probs, k - 1, axis=-1)[..., :k] if k < probs.shape[-1] else \
        np.broadcast_to(np.arange(probs.shape[-1]), probs.shape).copy()
    top_p = np.take_along_axis(probs, top_ids, axis=-1)
    order = np.argsort(-top_p, axis=-1, kind="stable")
    top_ids, top_p = np.take_along_axis(top_ids, order, -1), np.take_along_axis(top_p, order, -1)
    strings = token_strings(std.model, top_ids)
    R, T = top_ids.shape[:2]
    top_tokens = [[strings[(r * T + t) * k:(r * T + t + 1) * k] for t in range(T)] for r in range(R)]
    target_list = nll = rank = None
    if targets is not None:
        if isinstance(targets, str):
            if targets != "next":
                raise ValueError("targets must be token ids or 'next'")
            target_list = ids[1:] + [-1]
        else:
            target_list = [-1 if t is None else int(t) for t in targets]
        if len(target_list) != len(ids):
            raise ValueError(f"targets has {len(target_list)} entries; the prompt has {len(ids)} tokens")
        target_list = [target_list[p] for p in positions]
        t = np.asarray(target_list)
        valid = t >= 0
        safe = np.where(valid, t, 0)[None, :, None]
        target_logp = np.take_along_axis(logp, np.broadcast_to(safe, (R, T, 1)), -1)[..., 0]
        nll = np.where(valid, -target_logp, np.nan).astype(np.float32)
        rank = np.where(valid, (logp > target_logp[..., None]).sum(-1), -1).astype(np.int64)
    labels = ["embeddings" if layer == -1 else str(layer) for layer in layers]
    return LensResult(probs=probs, layers=list(layers), labels=labels, tokens=token_strings(std.model, ids),
                      input_ids=list(ids), top_ids=top_ids.astype(np.int64), top_probs=top_p.astype(np.float32),
                      top_tokens=top_tokens, targets=target_list, target_nll=nll, target_rank=rank, kind=kind,
                      positions=list(positions))
