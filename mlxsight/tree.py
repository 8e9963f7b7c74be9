"""The one walker over nested values: tuples (named ones too), lists, dicts, ``ModelOutput``s, slices.

Everything that looks inside a value (node arguments, proxies in saved containers, module outputs'
structure, row slicing) goes through here, so every part agrees on what a container is: a
``ModelOutput`` stays a ``ModelOutput`` and a named tuple stays that named tuple.
"""

from __future__ import annotations

from typing import Any, Callable

from .outputs import ModelOutput

_ATOMS = (int, float, complex, str, bytes, bool, type(None))


def _rebuild_tuple(value: tuple, items: list) -> tuple:
    if hasattr(value, "_fields"):  # a named tuple takes its fields positionally
        return type(value)(*items)
    return type(value)(items)


def map_tree(value: Any, fn: Callable[[Any], Any], slices: bool = False) -> Any:
    """``value`` rebuilt with ``fn`` applied to every leaf (with ``slices``, also inside slices)."""
    if isinstance(value, _ATOMS):
        return fn(value)
    if isinstance(value, ModelOutput):
        return type(value)(**{k: map_tree(v, fn, slices) for k, v in value.items()})
    if isinstance(value, dict):
        return {k: map_tree(v, fn, slices) for k, v in value.items()}
    if isinstance(value, list):
        return [map_tree(v, fn, slices) for v in value]
    if isinstance(value, tuple):
        return _rebuild_tuple(value, [map_tree(v, fn, slices) for v in value])
    if slices and isinstance(value, slice):
        return slice(*(map_tree(v, fn, slices) for v in (value.start, value.stop, value.step)))
    return fn(value)


def map_matching(value: Any, kind: type | tuple[type, ...], fn: Callable[[Any], Any]) -> Any:
    """``value`` rebuilt with every instance of ``kind`` inside it (slices included) replaced by
    ``fn(instance)``; other leaves are kept as they are."""
    # ``kind`` first: a proxy answers it from its type, but would have its ``__class__`` asked for atoms
    if isinstance(value, kind):
        return fn(value)
    if isinstance(value, _ATOMS):
        return value
    if isinstance(value, ModelOutput):
        return type(value)(**{k: map_matching(v, kind, fn) for k, v in value.items()})
    if isinstance(value, dict):
        return {k: map_matching(v, kind, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [map_matching(v, kind, fn) for v in value]
    if isinstance(value, tuple):
        return _rebuild_tuple(value, [map_matching(v, kind, fn) for v in value])
    if isinstance(value, slice):
        return slice(*(map_matching(v, kind, fn) for v in (value.start, value.stop, value.step)))
    return value


def find_all(value: Any, kind: type | tuple[type, ...], out: list | None = None) -> list:
    """Every instance of ``kind`` inside ``value`` (slices included), in order."""
    out = [] if out is None else out
    if isinstance(value, kind):
        out.append(value)
    elif isinstance(value, dict):
        for v in value.values():
            find_all(v, kind, out)
    elif isinstance(value, (tuple, list)):
        for v in value:
            find_all(v, kind, out)
    elif isinstance(value, slice):
        for v in (value.start, value.stop, value.step):
            find_all(v, kind, out)
    return out


def zip_tree(a: Any, b: Any, fn: Callable[[Any, Any], Any]) -> Any:
    """``a`` rebuilt with ``fn(leaf_of_a, leaf_of_b)`` for the matching leaves of ``b``."""
    if isinstance(a, ModelOutput):
        return type(a)(**{k: zip_tree(v, b[k], fn) for k, v in a.items()})
    if isinstance(a, dict):
        return {k: zip_tree(v, b[k], fn) for k, v in a.items()}
    if isinstance(a, (tuple, list)):
        if len(a) != len(b):
            raise ValueError(f"structure mismatch: {len(a)} elements vs {len(b)}")
        items = [zip_tree(x, y, fn) for x, y in zip(a, b)]
        return items if isinstance(a, list) else _rebuild_tuple(a, items)
    return fn(a, b)


def leaves(value: Any) -> list:
    out: list = []
    map_tree(value, lambda leaf: out.append(leaf))
    return out


def contains(value: Any, test: Callable[[Any], bool], depth: int = -1) -> bool:
    """Whether ``value`` is, or holds within ``depth`` levels (-1: any), a leaf passing ``test``."""
    if test(value):
        return True
    if depth == 0:
        return False
    if isinstance(value, dict):
        return any(contains(v, test, depth - 1) for v in value.values())
    if isinstance(value, (tuple, list)):
        return any(contains(v, test, depth - 1) for v in value)
    return False
