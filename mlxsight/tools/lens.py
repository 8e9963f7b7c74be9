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
from typing import Any

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

    ``decode_rows`` normalises in place over the logits' own memory (an MLX array is not copied),
    so no other ``[rows, P, vocab]`` array is allocated (on Linux a fresh 32 MB array costs more in
    page faults than the exp that fills it). On CPU numpy's exp and partition run many times faster
    than MLX's CPU kernels (measured over ``[8, 128, 8192]``: ``exp`` 11 ms against 230 ms,
    ``argpartition`` 34 ms against 210 ms)."""
    with backend.no_grad(std.model):
        z = _writable_numpy(logits)
    R, P, V = z.shape
    target_list = _targets(targets, ids, positions)
    t = None if target_list is None else np.tile(np.asarray(target_list, np.int64), R)
    d = decode_rows(z.reshape(R * P, V), top_k, t)
    probs = z  # overwritten in place
    top_ids = d.top_ids.reshape(R, P, -1)
    k = top_ids.shape[-1]
    top_p = np.take_along_axis(probs, top_ids, -1)
    nll = rank = None
    if t is not None:
        nll = d.target_nll.reshape(R, P)
        rank = d.target_rank.reshape(R, P)
    strings = token_strings(std.model, top_ids)
    top_tokens = [[strings[(r * P + c) * k:(r * P + c + 1) * k] for c in range(P)] for r in range(R)]
    labels = ["embeddings" if layer == -1 else str(layer) for layer in layers]
    return LensResult(probs=probs, layers=list(layers), labels=labels, tokens=token_strings(std.model, ids),
                      input_ids=list(ids), top_ids=top_ids, top_probs=top_p,
                      top_tokens=top_tokens, targets=target_list, target_nll=nll, target_rank=rank, kind=kind,
                      positions=list(positions))


@dataclass
class DecodedRows:
    """What ``decode_rows`` reads from each row before overwriting it with probabilities."""

    top_ids: np.ndarray  # [rows, k] int64, most probable first
    target_nll: np.ndarray | None  # [rows] float32 -log p(target), nan where no target
    target_rank: np.ndarray | None  # [rows] int64, -1 where no target


CHUNK_VALUES = 1 << 18  # values per chunk: 1 MB of float32, a core's L2 here (512 KB and 4 MB measured slower)
PARALLEL_MIN = 1 << 20  # values below which a second thread costs more than it saves


def decode_rows(z: np.ndarray, top_k: int, targets: np.ndarray | None = None) -> DecodedRows:
    """Overwrite each row of ``z`` (``[rows, V]`` float32, C-contiguous) with its softmax; return its
    top-k ids and, given one target id per row (``-1``: none), the target's NLL and rank.

    Rows go in cache-sized chunks, each read for its maxima, top-k, target and rank and then
    normalised while still cached (max, exp, sum and divide are four passes over the same 1 MB
    instead of over the whole array); the chunks are shared among threads (numpy's kernels release
    the GIL). Each row's result does not depend on the chunking."""
    n_rows, V = z.shape
    k = min(top_k, V)
    top_ids = np.empty((n_rows, k), np.int64)
    nll = rank = None
    if targets is not None:
        nll = np.empty(n_rows, np.float32)
        rank = np.empty(n_rows, np.int64)
    step = max(1, CHUNK_VALUES // max(V, 1))

    def work(a: int) -> None:
        b = min(a + step, n_rows)
        rows = z[a:b]
        top_ids[a:b] = top_k_ids(rows, k)
        if targets is not None:
            t = targets[a:b]
            valid = t >= 0
            target_z = rows[np.arange(b - a), np.where(valid, t, 0)]
            rank[a:b] = np.where(valid, (rows > target_z[:, None]).sum(-1), -1)
        log_total, shift = softmax_(rows)
        if targets is not None:
            nll[a:b] = np.where(valid, log_total - (target_z - shift[:, 0]), np.nan)

    starts = range(0, n_rows, step)
    n = max(1, min(os.cpu_count() or 1, 4, z.size // PARALLEL_MIN, len(starts)))
    if n == 1:
        for a in starts:
            work(a)
    else:
        with ThreadPoolExecutor(n) as pool:
            list(pool.map(work, starts))
    return DecodedRows(top_ids, nll, rank)


# |row maximum| up to which exp(z) needs no shift: exp(60) * vocab stays far below float32's 3e38,
# and a row's largest term exp(-60) = 9e-27 far above its smallest normal number.
SAFE_EXP = 60.0


def softmax_(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Overwrite ``z`` with ``softmax(z)`` over the last axis; return ``(log_total, shift)``, the
    log-normaliser of ``z - shift`` (``log p = z - shift - log_total`` for the original ``z``).

    A row is shifted by its maximum only when that exceeds ``SAFE_EXP`` in magnitude (otherwise
    ``exp(z)`` is exact to float32 rounding), so each row's result is the same in any batch of rows,
    and a batch without such rows saves the subtraction pass."""
    peak = z.max(axis=-1, keepdims=True)
    shift = np.where(np.abs(peak) > SAFE_EXP, peak, np.float32(0))
    if shift.any():
        np.subtract(z, shift, out=z)
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
