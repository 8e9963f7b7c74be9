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
    check_key(tuple(base.shape), key, values=False)
    out = mx.array(base)
    out[key] = value
    return out


def getitem(base: Any, key: Any) -> Any:
    """``base[key]`` with torch's bounds checks (MLX drops or wraps out-of-range indices)."""
    if isinstance(base, mx.array):
        check_key(tuple(base.shape), key, values=False)
    return base[key]


def check_key(shape: tuple, key: Any, values: bool = True) -> None:
    """Raise ``IndexError`` (torch's messages) if ``key`` indexes past ``shape``.

    MLX does not check: an out-of-range write is dropped and a read gives an error about
    something else, or garbage. Ints, slices, None, Ellipsis and boolean masks are checked by
    shape; the values of integer index arrays only when ``values`` is set and they are concrete
    (an array computed inside a trace has no value while recording)."""
    keys = key if isinstance(key, tuple) else (key,)
    spans = [_span(k) for k in keys]
    if sum(k is Ellipsis for k in keys) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    used = sum(s for s in spans if s is not None)
    if used > len(shape):
        raise IndexError(f"too many indices for tensor of dimension {len(shape)}")
    dim = 0
    for k, span in zip(keys, spans):
        if span is None:
            dim += len(shape) - used
            continue
        if span:
            _check_one(k, dim, shape[dim:dim + span], values)
        dim += span


def _span(k: Any) -> int | None:
    """How many dimensions one index element consumes (None for Ellipsis)."""
    if k is Ellipsis:
        return None
    if k is None or isinstance(k, bool):
        return 0
    if isinstance(k, (int, slice)):
        return 1
    array = getattr(k, "_meta", k)  # a proxy's value while recording
    dtype = getattr(array, "dtype", None)
    if dtype is not None and (dtype == mx.bool_ or getattr(dtype, "kind", "") == "b"):
        return len(array.shape)
    return 1


def _check_one(k: Any, dim: int, sizes: tuple, values: bool) -> None:
    n = sizes[0]
    if isinstance(k, int):
        if not -n <= k < n:
            raise IndexError(f"index {k} is out of bounds for dimension {dim} with size {n}")
        return
    if isinstance(k, slice):
        if k.step is not None and isinstance(k.step, int) and k.step == 0:
            raise ValueError("slice step cannot be zero")
        return
    array = getattr(k, "_meta", k)
    dtype = getattr(array, "dtype", None)
    shape = tuple(getattr(array, "shape", ()))
    if dtype is not None and (dtype == mx.bool_ or getattr(dtype, "kind", "") == "b"):
        if shape != tuple(sizes):
            raise IndexError(f"The shape of the mask {list(shape)} at index {dim} does not match the shape of the "
                             f"indexed tensor {list(sizes)} at index {dim}")
        return
    if not values or array is not k:  # an index computed inside the trace: no value yet
        return
    if isinstance(k, (list, tuple)):
        flat = list(_flatten(k))
        if not all(isinstance(v, int) for v in flat):
            return
    elif isinstance(k, mx.array) or hasattr(k, "tolist") and hasattr(k, "shape"):
        if getattr(k, "size", 1) == 0 or not _is_integer(dtype):
            return
        flat = [int(k.min()), int(k.max())] if isinstance(k, mx.array) else k.tolist()
        flat = list(_flatten(flat)) if isinstance(flat, list) else [flat]
    else:
        return
    for v in flat:
        if not -n <= v < n:
            raise IndexError(f"index {v} is out of bounds for dimension {dim} with size {n}")


def _is_integer(dtype: Any) -> bool:
    if isinstance(dtype, mx.Dtype):
        return mx.issubdtype(dtype, mx.integer)
    return getattr(dtype, "kind", "") in ("i", "u") or "int" in str(dtype)


def _flatten(values: Any):
    for v in values:
        if isinstance(v, (list, tuple)):
            yield from _flatten(v)
        else:
            yield v


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
        check_key(tuple(base.shape), self.key)
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
