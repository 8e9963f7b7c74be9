"""Activation caches: every (or selected) module's output, and optionally inputs, from a trace.

``cache = tracer.cache()`` is filled when the trace runs, with post-intervention values, keyed by
nnsight-style paths in the order modules finish (``cache["model.model.layers.0"].output``), and
navigable like the model (``cache.model.model.layers[0].output``). A module called several times
(generation steps) holds a list of entries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import mlx.core as mx

from .graph import HookPoint
from .structure import Structure
from .tree import leaves, map_tree


class CacheEntry:
    """One visit of a module: its output and, if requested, its ``(args, kwargs)``."""

    def __init__(self, output: Any = None, inputs: Any = None) -> None:
        self.output = output
        self.inputs = inputs

    @property
    def input(self) -> Any:
        if self.inputs is None:
            raise AttributeError("inputs were not cached: use tracer.cache(include_inputs=True)")
        args, kwargs = self.inputs
        return args[0] if args else next(iter(kwargs.values()))

    def __repr__(self) -> str:
        shape = getattr(self.output, "shape", None)
        return f"CacheEntry(output={'array' + str(tuple(shape)) if shape is not None else type(self.output).__name__})"


class Cache(dict):
    """``path -> CacheEntry`` (or a list of entries, one per call), filled at trace exit."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return _CachePath(self, name)

    def save_safetensors(self, path: str | Path) -> None:
        """Write every cached array to a safetensors file (keys ``<path>.<call>.output[.i]``)."""
        arrays: dict[str, mx.array] = {}
        for key, entries in self.items():
            for call, entry in enumerate(entries if isinstance(entries, list) else [entries]):
                for field in ("output", "inputs"):
                    value = getattr(entry, field)
                    for i, leaf in enumerate(leaves(value) if value is not None else []):
                        if isinstance(leaf, mx.array):
                            arrays[f"{key}.{call}.{field}.{i}"] = leaf
        mx.save_safetensors(str(path), arrays)

    @staticmethod
    def load_safetensors(path: str | Path) -> dict[str, mx.array]:
        """The flat ``name -> array`` mapping written by ``save_safetensors``."""
        return mx.load(str(path))


class _CachePath:
    def __init__(self, cache: Cache, path: str) -> None:
        self._cache, self._path = cache, path

    def __getattr__(self, name: str) -> Any:
        if name in ("output", "inputs", "input") and self._path in self._cache:
            return getattr(self._cache[self._path], name)
        return _CachePath(self._cache, f"{self._path}.{name}")

    def __getitem__(self, index: int) -> "_CachePath":
        return _CachePath(self._cache, f"{self._path}.{index}")

    def __repr__(self) -> str:
        return f"<cache path {self._path}>"


def cast(value: Any, dtype: Any) -> Any:
    return map_tree(value, lambda a: a.astype(dtype) if isinstance(a, mx.array) else a)


class CacheRequest:
    """One ``tracer.cache(...)`` call: which modules, what to keep, and the cache it fills."""

    def __init__(self, modules: Any = None, dtype: Any = None, include_output: bool = True,
                 include_inputs: bool = False) -> None:
        self.cache = Cache()
        self.paths = None
        if modules is not None:
            self.paths = {m._path if hasattr(m, "_path") else _strip_root(str(m)) for m in modules}
        self.dtype, self.output, self.inputs = dtype, include_output, include_inputs

    def fill(self, structure: Structure, slot: Callable[[HookPoint], Any]) -> None:
        """One entry per module call, in the order calls finish, holding the trace's proxies."""
        cache = self.cache
        for point in sorted(structure.order, key=structure.order.__getitem__):
            if point.kind != "output" or (self.paths is not None and point.path not in self.paths):
                continue
            entry = CacheEntry()
            if self.output:
                entry.output = slot(point)
            if self.inputs:
                entry.inputs = slot(HookPoint(point.path, "input", point.call))
            key = point.module
            if key in cache:
                previous = cache[key]
                cache[key] = (previous if isinstance(previous, list) else [previous]) + [entry]
            else:
                cache[key] = entry

    def entries(self) -> list[CacheEntry]:
        return [e for entries in self.cache.values() for e in (entries if isinstance(entries, list) else [entries])]

    def values(self) -> list:
        return [(e.output, e.inputs) for e in self.entries()]

    def resolve(self, resolve: Callable[[Any], Any]) -> None:
        """Replace the proxies in every entry by their values (cast to the requested dtype)."""
        for entry in self.entries():
            entry.output, entry.inputs = resolve(entry.output), resolve(entry.inputs)
            if self.dtype is not None:
                entry.output, entry.inputs = cast(entry.output, self.dtype), cast(entry.inputs, self.dtype)


def _strip_root(path: str) -> str:
    return path[len("model."):] if path.startswith("model.") else ("" if path == "model" else path)
