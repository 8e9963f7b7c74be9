"""What a tool feeds the model and reads back: token ids from text, layer and position indices,
token strings. Shared by every tool so that they tokenize, count and label alike."""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from .standardize import Standardized, standardize


def as_standardized(model: Any) -> Standardized:
    """``model`` standardized (a ``Standardized`` passes through, so callers can reuse one)."""
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


# Per tokenizer: the strings of ids decoded so far (decoding is ~10 us of Python per id, and a
# logit lens shows thousands), dropped when its size or clean-up setting changes.
_DECODED: "weakref.WeakKeyDictionary[Any, tuple[tuple, dict[int, str]]]" = weakref.WeakKeyDictionary()


def token_strings(model: Any, ids: Any) -> list[str]:
    """Each id decoded on its own (one string per id), remembered per tokenizer."""
    tokenizer = model.tokenizer
    flat = np.asarray(ids).reshape(-1).tolist()
    key = (len(tokenizer), getattr(tokenizer, "clean_up_tokenization_spaces", None))
    try:
        known_key, decoded = _DECODED.get(tokenizer, (None, {}))
        if known_key != key:
            decoded = {}
            _DECODED[tokenizer] = (key, decoded)
    except TypeError:  # not weakly referenceable: decode for this call only
        decoded = {}
    new = sorted(set(flat).difference(decoded))
    if new:
        decoded.update(zip(new, tokenizer.batch_decode([[i] for i in new])))
    return [decoded[i] for i in flat]
