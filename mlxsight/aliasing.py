"""Torch-style views on MLX values.

MLX arrays have no views: ``h = out[:, -1]; h[:] = 0`` cannot reach ``out``. A view here is a
``(base, spec)`` pair; reading applies ``spec.get(base)`` and an in-place edit of the view writes
back with ``spec.put(base, new_view_value)``, so edits propagate the way they do in torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlx.core as mx

from .outputs import ModelOutput


def set_item(base: mx.array, key: Any, value: Any) -> mx.array:
    """``base[key] = value`` without touching ``base`` (a lazy, differentiable copy)."""
    out = mx.array(base)
    out[key] = value
    return out


def format_key(key: Any) -> str:
    keys = key if isinstance(key, tuple) else (key,)
    return ", ".join(_format_one(k) for k in keys)


def _format_one(k: Any) -> str:
    if isinstance(k, slice):
        parts = ["" if v is None else str(v) for v in (k.start, k.stop, k.step)]
        return ":".join(parts[:2]) + (f":{parts[2]}" if k.step is not None else "")
    if k is Ellipsis:
        return "..."
    if isinstance(k, mx.array):
        return f"array{tuple(k.shape)}"
    return repr(k)


def is_basic_key(key: Any) -> bool:
    """Keys that make torch views (ints, slices, None, Ellipsis); others index by copy."""
    keys = key if isinstance(key, tuple) else (key,)
    return all(k is None or k is Ellipsis or isinstance(k, (int, slice)) for k in keys)


class ViewSpec:
    def get(self, base: Any) -> Any:
        raise NotImplementedError

    def put(self, base: Any, value: Any) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class Item(ViewSpec):
    """An element of a tuple, list, dict or ModelOutput."""

    key: Any

    def get(self, base: Any) -> Any:
        return base[self.key]

    def put(self, base: Any, value: Any) -> Any:
        if isinstance(base, (tuple, list)):
            items = list(base)
            items[self.key] = value
            return type(base)(items)
        if isinstance(base, ModelOutput):
            fields = dict(base)
            name = self.key if isinstance(self.key, str) else list(base.keys())[self.key]
            fields[name] = value
            return type(base)(**fields)
        if isinstance(base, dict):
            return {**base, self.key: value}
        raise TypeError(f"cannot write an element of a {type(base).__name__}")

    def __str__(self) -> str:
        return f"[{self.key!r}]"


@dataclass(frozen=True)
class Index(ViewSpec):
    """Basic indexing of an array (ints, slices, None, Ellipsis)."""

    key: Any

    def get(self, base: mx.array) -> mx.array:
        return base[self.key]

    def put(self, base: mx.array, value: mx.array) -> mx.array:
        return set_item(base, self.key, value)

    def __str__(self) -> str:
        return f"[{format_key(self.key)}]"


@dataclass(frozen=True)
class Reshape(ViewSpec):
    """``.view(...)`` / ``.reshape(...)`` of an array."""

    shape: tuple

    def get(self, base: mx.array) -> mx.array:
        return base.reshape(self.shape)

    def put(self, base: mx.array, value: mx.array) -> mx.array:
        return value.reshape(base.shape)

    def __str__(self) -> str:
        return f".view{self.shape}"
