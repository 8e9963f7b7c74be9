"""Turning invoke inputs into one batch: tokenizing, padding, and the padding mask.

Each invoke's input becomes rows of token ids; rows are padded together on the tokenizer's
padding side with its pad id, as nnsight does. mlx-lm models take no attention mask, so a padded
batch is run with ``PaddingMask`` stand-ins in the cache slots: they mask the pads and shift RoPE
positions so every row's real tokens count from 0, which makes each row's unpadded positions equal
a separate run of that input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlx.core as mx


@dataclass
class Batch:
    input_ids: mx.array  # [B, T] int32
    attention_mask: mx.array | None  # [B, T], 1 for real tokens; None when nothing is padded
    left_padding: list[int]
    right_padding: list[int]

    @property
    def size(self) -> int:
        return self.input_ids.shape[0]


def rows_of(inputs: tuple, kwargs: dict, tokenizer: Any) -> list[list[int]]:
    """Token-id rows for one invoke's input (text, texts, chat conversations, ids, arrays, or an
    encoding dict). Tokenizer options (``max_length``, ``truncation``, ``add_special_tokens``) apply
    to text, per invoke, as in nnsight."""
    options = {k: kwargs[k] for k in TOKENIZER_OPTIONS if k in kwargs}
    # `use_cache` changes nothing in one forward pass; `padding` is always to the batch's longest row
    kwargs = {k: v for k, v in kwargs.items() if k not in TOKENIZER_OPTIONS and k not in ("padding", "use_cache")}
    if kwargs:
        unknown = set(kwargs) - {"input_ids", "attention_mask"}
        if unknown:
            raise TypeError(f"unsupported trace/invoke keyword(s) for an MLX language model: {sorted(unknown)}")
        if inputs:
            raise TypeError("give the input either positionally or as input_ids=..., not both")
        return _rows_from_encoding(kwargs)
    if len(inputs) != 1:
        raise TypeError(f"expected one input (text, list of texts, token ids, array or dict), got {len(inputs)}")
    x = inputs[0]
    if isinstance(x, str):
        return [_encode(tokenizer, x, options)]
    if _is_chat(x):
        return [_encode_chat(tokenizer, x)]
    if isinstance(x, (list, tuple)) and x and all(_is_chat(c) for c in x):
        return [_encode_chat(tokenizer, c) for c in x]
    if isinstance(x, dict) or hasattr(x, "keys") and "input_ids" in x.keys():
        return _rows_from_encoding(dict(x))
    if isinstance(x, (list, tuple)):
        if not x:
            raise ValueError("empty input")
        if all(isinstance(s, str) for s in x):
            return [_encode(tokenizer, s, options) for s in x]
        if all(isinstance(i, int) for i in x):
            return [list(x)]
        if all(isinstance(r, (list, tuple)) for r in x):
            return [[int(i) for i in r] for r in x]
    if isinstance(x, mx.array) and x.ndim == 2 and x.shape[0] == 1 and not mx.issubdtype(x.dtype, mx.floating):
        return Rows([x])  # one row of ids: kept as an array (no round trip through Python lists)
    ids = _to_int_lists(x)
    return [ids] if ids and isinstance(ids[0], int) else ids


class Rows(list):
    """Token-id rows; an element may be a ``[1, T]`` id array kept as given."""


TOKENIZER_OPTIONS = ("max_length", "truncation", "add_special_tokens")


def _encode(tokenizer: Any, text: str, options: dict | None = None) -> list[int]:
    return list(tokenizer(text, **(options or {}))["input_ids"])


def _is_chat(x: Any) -> bool:
    """A conversation: a non-empty list of ``{"role": ..., "content": ...}`` messages."""
    return isinstance(x, (list, tuple)) and bool(x) and all(isinstance(m, dict) and "role" in m for m in x)


def _encode_chat(tokenizer: Any, conversation: Any) -> list[int]:
    """One row: the conversation through the tokenizer's chat template, ready for the reply."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("chat-message input needs a tokenizer with a chat template")
    ids = tokenizer.apply_chat_template(list(conversation), add_generation_prompt=True, tokenize=True,
                                        return_dict=False)
    return [int(i) for i in ids]


def _to_int_lists(x: Any) -> list:
    if hasattr(x, "tolist"):
        return x.tolist()
    raise TypeError(f"cannot use a {type(x).__name__} as a language-model input")


def _rows_from_encoding(enc: dict) -> list[list[int]]:
    ids = _to_int_lists(enc["input_ids"]) if not isinstance(enc["input_ids"], list) else enc["input_ids"]
    ids = [ids] if ids and isinstance(ids[0], int) else ids
    mask = enc.get("attention_mask")
    if mask is None:
        return [list(r) for r in ids]
    mask = _to_int_lists(mask) if not isinstance(mask, list) else mask
    mask = [mask] if mask and isinstance(mask[0], int) else mask
    return [[t for t, m in zip(r, mr) if m] for r, mr in zip(ids, mask)]


def pad(rows: list[list[int]], side: str, pad_id: int) -> Batch:
    """Pad rows to one length on ``side`` ("left" or "right")."""
    if len(rows) == 1 and isinstance(rows[0], mx.array):
        ids = rows[0].astype(mx.int32)
        return Batch(ids, None, [0], [0])
    rows = [r.reshape(-1).tolist() if isinstance(r, mx.array) else r for r in rows]
    width = max(len(r) for r in rows)
    if min(len(r) for r in rows) == 0:
        raise ValueError("an input encodes to zero tokens")
    gaps = [width - len(r) for r in rows]
    if side == "left":
        ids = [[pad_id] * g + r for r, g in zip(rows, gaps)]
        mask = [[0] * g + [1] * len(r) for r, g in zip(rows, gaps)]
    else:
        ids = [r + [pad_id] * g for r, g in zip(rows, gaps)]
        mask = [[1] * len(r) + [0] * g for r, g in zip(rows, gaps)]
    padded = any(gaps)
    return Batch(
        input_ids=mx.array(ids, dtype=mx.int32),
        attention_mask=mx.array(mask, dtype=mx.int32) if padded else None,
        left_padding=gaps if side == "left" else [0] * len(rows),
        right_padding=gaps if side != "left" else [0] * len(rows),
    )


class PaddingMask:
    """Stands in an mlx-lm cache slot for one padded forward: masks pads, offsets positions.

    mlx-lm builds its mask with ``cache.make_mask`` and its RoPE positions from ``cache.offset``;
    a left-padded row gets offset ``-padding`` so its first real token is at position 0.
    """

    def __init__(self, left_padding: list[int], right_padding: list[int]) -> None:
        self.left_padding = mx.array(left_padding) if any(left_padding) else None
        self.right_padding = mx.array(right_padding) if any(right_padding) else None
        self.offset = -self.left_padding if self.left_padding is not None else 0

    def make_mask(self, n: int, return_array: bool = False, window_size: int | None = None) -> mx.array:
        """``[B, 1, n, n]`` (or ``[n, n]``) booleans: causal, within the window, never a pad key."""
        positions = mx.arange(n)
        mask = positions[:, None] >= positions[None]
        if window_size is not None:
            mask = mask & (positions[:, None] < positions[None] + window_size)
        if self.left_padding is not None:
            mask = mask & (self.left_padding[:, None, None, None] <= positions)
        if self.right_padding is not None:
            mask = mask & (positions < (n - self.right_padding)[:, None, None, None])
        return mask

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        return keys, values

    def empty(self) -> bool:
        return True
