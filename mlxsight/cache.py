"""Activation caches: every (or selected) module's output, and optionally inputs, from a trace.

``cache = tracer.cache()`` is filled when the trace runs, with post-intervention values, keyed by
nnsight-style paths in the order modules finish (``cache["model.model.layers.0"].output``), and
navigable like the model (``cache.model.model.layers[0].output``). A module called several times
(generation steps) holds its entries, one per call, as nnsight's ``CacheView`` of it reads: ``len``
is the call count, ``.output`` the list of every call's output (``[0]`` is step 0's), and ``[i]``
call ``i``'s entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

import mlx.core as mx

from .graph import HookPoint
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

    def __len__(self) -> int:
        return 1  # one visit (nnsight's len of a module's cache view)

    def __repr__(self) -> str:
        shape = getattr(self.output, "shape", None)
        return f"CacheEntry(output={'array' + str(tuple(shape)) if shape is not None else type(self.output).__name__})"


class CacheEntries(Sequence):
    """The entries of a module called several times, one per call (``[i]`` is call ``i``'s);
    ``.output``, ``.inputs`` and ``.input`` list each call's value, as nnsight's ``CacheView`` does
    for a module visited more than once. Not a ``list``: resolving a trace's values keeps it whole."""

    def __init__(self, entries: list[CacheEntry]) -> None:
        self._entries = list(entries)

    def __getitem__(self, index: Any) -> Any:
        return self._entries[index]

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def output(self) -> list:
        return [entry.output for entry in self._entries]

    @property
    def inputs(self) -> list:
        return [entry.inputs for entry in self._entries]

    @property
    def input(self) -> list:
        return [entry.input for entry in self._entries]

    def __repr__(self) -> str:
        return f"CacheEntries({self._entries!r})"


class Cache(dict):
    """``path -> CacheEntry`` (``CacheEntries`` for a module called several times), filled at trace exit.

    Besides its keys, a cache is navigated like the model it was taken from (nnsight's
    ``CacheView``): ``cache.model.layers[0]``, ``cache["model.blocks.0"]`` with ``rename=`` aliases,
    resolved through the model's envoys, so every spelling the model accepts reaches the same entry."""

    _model: Any = None  # the root envoy navigation resolves against

    @property
    def _cache(self) -> "_ModelLink":
        """nnsight's ``CacheView._cache``, whose ``model`` its docs set: ``cache._cache.model = None``
        lets the model go (path keys keep working), ``= model`` re-attaches it for navigation."""
        return _ModelLink(self)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return _CachePath(self, None).__getattr__(name)

    def __getitem__(self, key: Any) -> Any:
        if dict.__contains__(self, key) or not isinstance(key, str) or self._model is None:
            return dict.__getitem__(self, key)
        view = _CachePath(self, None)
        for part in key.split("."):
            view = view._step(part)
        return dict.__getitem__(self, view._path)

    def save_safetensors(self, path: str | Path) -> None:
        """Write every cached array to a safetensors file (keys ``<path>.<call>.output[.i]``)."""
        arrays: dict[str, mx.array] = {}
        for key, entries in self.items():
            for call, entry in enumerate(entries if isinstance(entries, CacheEntries) else [entries]):
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


class _ModelLink:
    """The model a ``Cache`` navigates through, read and set as ``cache._cache.model``."""

    def __init__(self, cache: Cache) -> None:
        self._of = cache

    @property
    def model(self) -> Any:
        return self._of._model

    @model.setter
    def model(self, model: Any) -> None:
        self._of._model = model


class _CachePath:
    """A node of the model reached from a cache: its entries by ``.output``/``.inputs``/``.input``."""

    def __init__(self, cache: Cache, envoy: Any, path: str | None = None) -> None:
        self._cache, self._envoy = cache, envoy
        self._path = path if path is not None else (envoy.path if envoy is not None else "")

    def _step(self, name: str) -> "_CachePath":
        model = self._cache._model
        if model is None:  # no model to resolve against: paths are spelled natively
            return _CachePath(self._cache, None, _join(self._path, name))
        if self._envoy is None:  # the virtual root above the model: its child is the model
            node = model if name == model.path else getattr(model, name)
        elif name.lstrip("-").isdigit() and not hasattr(self._envoy, "_child"):
            node = self._envoy[int(name)]
        else:
            node = getattr(self._envoy, name)
        if not hasattr(node, "_path"):
            raise AttributeError(f"{_join(self._path, name)} is not a module")
        return _CachePath(self._cache, node)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in ("output", "inputs", "input") and self._path in self._cache:
            return getattr(dict.__getitem__(self._cache, self._path), name)
        return self._step(name)

    def __len__(self) -> int:
        """How many times the module was called (nnsight's ``len`` of a cache view)."""
        if self._path not in self._cache:
            raise KeyError(f"{self._path!r} was not cached")
        return len(dict.__getitem__(self._cache, self._path))

    def __getitem__(self, index: Any) -> "_CachePath":
        if self._cache._model is None or self._envoy is None:
            return self._step(str(index))
        node = self._envoy[index]
        if not hasattr(node, "_path"):
            raise AttributeError(f"{self._path}[{index!r}] is not a module")
        return _CachePath(self._cache, node)

    def __repr__(self) -> str:
        return f"<cache path {self._path}>"


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def cast(value: Any, dtype: Any) -> Any:
    return map_tree(value, lambda a: a.astype(dtype) if isinstance(a, mx.array) else a)


class CacheRequest:
    """One ``tracer.cache(...)`` call: which modules, what to keep, and the cache it fills."""

    def __init__(self, modules: Any = None, dtype: Any = None, include_output: bool = True,
                 include_inputs: bool = False, model: Any = None, rows: Any = None) -> None:
        self.cache = Cache()
        self.cache._model = model
        self.rows = rows  # a ViewSpec narrowing each value to one invoke's rows, or None
        self.paths = None
        if modules is not None:
            self.paths = {m._path if hasattr(m, "_path") else _strip_root(str(m)) for m in modules}
        self.dtype, self.output, self.inputs = dtype, include_output, include_inputs

    def fill(self, order: dict[HookPoint, Any], slot: Callable[[HookPoint], Any]) -> None:
        """One entry per module call, in the order calls finish (``order``: each hook point's
        position in the run), holding the trace's proxies."""
        cache = self.cache
        for point in sorted(order, key=order.__getitem__):
            if point.kind != "output" or (self.paths is not None and point.path not in self.paths):
                continue
            entry = CacheEntry()
            if self.output:
                entry.output = self._narrowed(slot(point), point)
            if self.inputs:
                inputs = HookPoint(point.path, "input", point.call)
                entry.inputs = self._narrowed(slot(inputs), inputs)
            key = point.module
            if key in cache:
                previous = cache[key]
                cache[key] = CacheEntries([*(previous if isinstance(previous, CacheEntries) else [previous]), entry])
            else:
                cache[key] = entry

    def _narrowed(self, value: Any, point: HookPoint) -> Any:
        # A cache opened inside an invoke holds that invoke's rows, as its own reads do (nnsight).
        return value if self.rows is None else value._make_view(self.rows, point.label())

    def entries(self) -> list[CacheEntry]:
        return [e for entries in self.cache.values()
                for e in (entries if isinstance(entries, CacheEntries) else [entries])]

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


class Caches:
    """A trace's ``tracer.cache()`` requests: declared while it records, filled with its proxies
    when it ends, their values resolved after the run. Made on a trace's first request only."""

    def __init__(self) -> None:
        self.requests: list[CacheRequest] = []

    def request(self, recorder: Any, model: Any, modules: Any, dtype: Any, include_output: bool,
                include_inputs: bool) -> Cache:
        """A new request in the open invoke. As in nnsight, declared inside an invoke (or a trace
        given an input) before the invoke reads or writes a model value; otherwise a ``ValueError``."""
        if not recorder.invokes:
            raise ValueError("Cannot access `tracer.cache()` outside of interleaving")
        if recorder.has_accessed(recorder.invokes[-1].index):
            raise ValueError("tracer.cache() must be declared before reading or modifying a model value")
        request = CacheRequest(modules, dtype, include_output, include_inputs, model, recorder.row_view())
        self.requests.append(request)
        return request.cache

    def fill(self, order: dict[HookPoint, Any], slot: Callable[[HookPoint], Any]) -> None:
        """Fill each request with the proxies of the hook points it caches (``order``: their positions)."""
        for request in self.requests:
            request.fill(order, slot)

    def values(self) -> list:
        """Everything the requests hold, to be computed."""
        return [request.values() for request in self.requests]

    def resolve(self, resolve: Callable[[Any], Any]) -> None:
        for request in self.requests:
            request.resolve(resolve)
