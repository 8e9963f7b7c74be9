"""The logit lens: each decoder layer's residual stream read through the final norm and unembedding.

``logit_lens(model, prompt)`` traces once, saves the output of every requested decoder layer and
decodes all of them in one batched call of the model's own final norm, unembedding and (Gemma 2)
logit soft-capping. ``TunedLens`` (``tuned_lens.py``) returns the same ``LensResult``, with a
learned affine translator applied to each layer's output first.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import mlx.core as mx
import numpy as np

from . import backend
from .inputs import as_standardized, layer_indices, position_indices, token_ids, token_strings
from .result import Result
from .standardize import Standardized


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


def decode(std: Standardized, logits: Any, ids: list[int], layers: list[int], top_k: int,
           targets: list[int] | str | None, kind: str, positions: list[int]) -> LensResult:
    """A ``LensResult`` from ``[rows, P, vocab]`` logits (a backend tensor, this call's to use) at
    input ``positions``.

    Everything runs as vectorised numpy passes over the logits' own memory (an MLX array is not
    copied): top-k, target scores and ranks read them, then the softmax overwrites them with the
    probabilities, so no other ``[rows, P, vocab]`` array is allocated (on Linux a fresh 32 MB
    array costs more in page faults than the exp that fills it). On CPU numpy's exp and partition
    run many times faster than MLX's CPU kernels (measured over ``[8, 128, 8192]``: ``exp`` 11 ms
    against 230 ms, ``argpartition`` 34 ms against 210 ms); top-k partitions a few blocks per row
    (``top_k_ids``), not the whole vocabulary."""
    with backend.no_grad(std.model):
        z = _writable_numpy(logits)
    R, P, V = z.shape
    top_ids = np.concatenate(by_rows(lambda rows: top_k_ids(rows, top_k), z)).reshape(R, P, -1)
    k = top_ids.shape[-1]
    target_list = _targets(targets, ids, positions)
    if target_list is not None:
        t = np.asarray(target_list)
        valid = t >= 0
        index = np.broadcast_to(np.where(valid, t, 0)[None, :, None], (R, P, 1))
        target_z = np.take_along_axis(z, index, -1)
        rank = np.where(valid, (z > target_z).sum(-1), -1).astype(np.int64)
    parts = by_rows(softmax_, z)
    log_total = np.concatenate([p[0] for p in parts]).reshape(R, P)
    shift = np.concatenate([p[1] for p in parts]).reshape(R, P, 1)
    probs = z  # overwritten in place
    top_p = np.take_along_axis(probs, top_ids, -1)
    nll = None
    if target_list is not None:
        nll = np.where(valid, log_total - (target_z - shift)[..., 0], np.nan).astype(np.float32)
    else:
        rank = None
    strings = token_strings(std.model, top_ids)
    top_tokens = [[strings[(r * P + t) * k:(r * P + t + 1) * k] for t in range(P)] for r in range(R)]
    labels = ["embeddings" if layer == -1 else str(layer) for layer in layers]
    return LensResult(probs=probs, layers=list(layers), labels=labels, tokens=token_strings(std.model, ids),
                      input_ids=list(ids), top_ids=top_ids, top_probs=top_p,
                      top_tokens=top_tokens, targets=target_list, target_nll=nll, target_rank=rank, kind=kind,
                      positions=list(positions))


PARALLEL_MIN = 1 << 20  # values per block below which splitting the rows costs more than it saves


def by_rows(fn: Callable[[np.ndarray], Any], z: np.ndarray) -> list:
    """``fn`` over contiguous blocks of ``z``'s rows (``[..., V]`` seen as ``[rows, V]``), one thread
    per block: numpy's kernels release the GIL, so on a multi-core CPU the blocks run side by side.
    Each row is computed exactly as alone; small arrays are one block."""
    rows = z.reshape(-1, z.shape[-1])
    n = max(1, min(os.cpu_count() or 1, 4, rows.size // PARALLEL_MIN, len(rows)))
    if n == 1:
        return [fn(rows)]
    bounds = np.linspace(0, len(rows), n + 1).astype(int)
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda ab: fn(rows[ab[0]:ab[1]]), zip(bounds[:-1], bounds[1:])))


# |row maximum| up to which exp(z) needs no shift: exp(60) * vocab stays far below float32's 3e38,
# and a row's largest term exp(-60) = 9e-27 far above its smallest normal number.
SAFE_EXP = 60.0


def softmax_(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Overwrite ``z`` with ``softmax(z)`` over the last axis; return ``(log_total, shift)``, the
    log-normaliser of ``z - shift`` (``log p = z - shift - log_total`` for the original ``z``).

    Rows are shifted by their maximum only when some ``|maximum|`` exceeds ``SAFE_EXP``; otherwise
    ``exp(z)`` is exact to float32 rounding and a pass over the logits is saved."""
    peak = z.max(axis=-1, keepdims=True)
    if np.abs(peak).max(initial=0.0) > SAFE_EXP:
        shift = peak
        np.subtract(z, shift, out=z)
    else:
        shift = np.zeros_like(peak)
    np.exp(z, out=z)
    total = z.sum(axis=-1, keepdims=True)
    z /= total
    return np.log(total)[..., 0], shift


def _writable_numpy(logits: Any) -> np.ndarray:
    """float32 logits as a numpy array this call may overwrite: an MLX array's own memory (the
    caller hands over a fresh array), else a copy or a fresh conversion."""
    if isinstance(logits, mx.array) and logits.dtype == mx.float32:
        mx.eval(logits)
        z = np.asarray(logits)
        if z.flags.writeable and z.flags.c_contiguous:
            return z
    z = backend.to_numpy(logits, np.float32)
    return z if z.flags.writeable and z.flags.c_contiguous and z.flags.owndata else np.array(z, np.float32)


BLOCK = 32  # top-k partitions only the k blocks of this many ids with the largest maxima


def top_k_ids(z: np.ndarray, k: int) -> np.ndarray:
    """``[..., k]`` int64 ids of the ``k`` largest values of each row of ``z`` (``k`` capped at
    its width), largest first; equal values in order of id among those kept (which of several
    equal values at the k-th place are kept is unspecified, as with a partition).

    The ``k`` largest values lie in the ``k`` blocks whose maxima are largest (each lies in a block
    whose maximum is at least the k-th largest value, and at most ``k`` blocks have one), so only
    those blocks are partitioned. Block ``j`` holds ids ``j, j + n, j + 2n, ...`` (``n`` blocks):
    their maxima are one elementwise maximum over ``BLOCK`` contiguous slices of the row, about
    twice as fast as partitioning the whole row. Ids past the last whole block are always kept."""
    V = z.shape[-1]
    k = min(k, V)
    rows = z.reshape(-1, V)
    n = V // BLOCK
    if n <= 4 * k:
        candidates = np.broadcast_to(np.arange(V), rows.shape)
    else:
        maxima = rows[:, :n * BLOCK].reshape(len(rows), BLOCK, n).max(axis=1)
        blocks = np.argpartition(maxima, n - k, axis=-1)[:, n - k:]
        candidates = (blocks[:, :, None] + n * np.arange(BLOCK)).reshape(len(rows), -1)
        if V % BLOCK:
            tail = np.broadcast_to(np.arange(n * BLOCK, V), (len(rows), V % BLOCK))
            candidates = np.concatenate([candidates, tail], axis=1)
    values = np.take_along_axis(rows, candidates, -1)
    width = values.shape[-1]
    pick = np.argpartition(values, width - k, axis=-1)[:, width - k:] if k < width else \
        np.broadcast_to(np.arange(width), values.shape)
    ids = np.take_along_axis(candidates, pick, -1)
    best = np.take_along_axis(values, pick, -1)
    order = np.lexsort((ids, -best), axis=-1)  # by value, descending; then by id
    return np.take_along_axis(ids, order, -1).astype(np.int64).reshape(z.shape[:-1] + (k,))


def _targets(targets: list[int] | str | None, ids: list[int], positions: list[int]) -> list[int] | None:
    """The target id of each decoded position (``-1``: none), from ids per input token or ``"next"``."""
    if targets is None:
        return None
    if isinstance(targets, str):
        if targets != "next":
            raise ValueError("targets must be token ids or 'next'")
        per_token = ids[1:] + [-1]
    else:
        per_token = [-1 if t is None else int(t) for t in targets]
    if len(per_token) != len(ids):
        raise ValueError(f"targets has {len(per_token)} entries; the prompt has {len(ids)} tokens")
    return [per_token[p] for p in positions]
