"""Structure, shape and dtype of every hook point, learned without computing anything.

MLX builds its graph lazily but computes shapes eagerly, so running the forward once without
``mx.eval`` tells every module input/output's structure (arrays, tuples, ``None`` members), shape
and dtype, and the order in which hook points happen. Results are cached per input signature.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

import mlx.core as mx
import mlx.nn as nn

from .tree import map_tree
from .graph import HookPoint
from .hooks import observing

_PRIMITIVES = (type(None), bool, int, float, complex, str, bytes)


@dataclass(frozen=True)
class ArraySpec:
    shape: tuple
    dtype: mx.Dtype

    def meta(self) -> mx.array:
        # Never evaluated: it only carries shape and dtype through recorded operations.
        return mx.zeros(self.shape, self.dtype)


@dataclass(frozen=True)
class Opaque:
    """A non-array, non-primitive value (a KV cache, a mask object): its type only."""

    type_name: str


def skeleton(value: Any) -> Any:
    def leaf(v: Any) -> Any:
        if isinstance(v, mx.array):
            return ArraySpec(tuple(v.shape), v.dtype)
        if isinstance(v, _PRIMITIVES):
            return v
        return Opaque(type(v).__name__)

    return map_tree(value, leaf)


def meta_of(skel: Any) -> Any:
    """Fresh lazy placeholder values with the skeleton's structure, shapes and dtypes."""
    return map_tree(skel, lambda s: s.meta() if isinstance(s, ArraySpec) else s)


def signature(value: Any) -> str:
    """A hashable summary of a value's structure, shapes and dtypes (the structure cache key): its
    skeleton written out, so every container's type, every key and every primitive is part of it."""
    return repr(skeleton(value))


@dataclass
class Structure:
    order: dict[HookPoint, int] = field(default_factory=dict)
    skeletons: dict[HookPoint, Any] = field(default_factory=dict)
    callees: dict[str, Any] = field(default_factory=dict)  # operation path -> what it calls (``source.callee``)
    _arrays: dict[HookPoint, mx.array] = field(default_factory=dict, repr=False, compare=False)

    def meta(self, point: HookPoint) -> Any:
        """A placeholder value for ``point``. A lone array's is made once: placeholders are never
        evaluated, and recorded operations make new arrays rather than change their inputs."""
        skel = self.skeletons[point]
        if not isinstance(skel, ArraySpec):
            return meta_of(skel)
        array = self._arrays.get(point)
        if array is None:
            array = self._arrays[point] = skel.meta()
        return array

    def calls(self, path: str) -> int:
        return sum(1 for p in self.order if p.path == path and p.kind == "output")


class LastStructure:
    """The structure of the last batch asked about: kept while the batch (the same object) and the
    instrumented modules stay the same. One entry: a trace asks about one batch at a time (the
    whole batch, or one invoke's part of it while recording), so nothing grows."""

    def __init__(self) -> None:
        self._batch: Any = None
        self._instrumented: frozenset | None = None
        self._structure: Any = None

    def get(self, batch: Any, instrumented: frozenset, make: Callable[[], Any]) -> Any:
        """The structure of ``batch`` with ``instrumented`` modules; ``make()`` when it is not kept."""
        if self._structure is None or self._batch is not batch or self._instrumented != instrumented:
            self._structure = make()  # made first: a failure keeps nothing
            self._batch, self._instrumented = batch, instrumented
        return self._structure


class CallCounter:
    """A hook observer that counts each observed module's (and instrumented operation's) calls: a
    module's n-th call is its hook points ``input``/``output`` with ``call=n``. Subclasses say what
    happens around one call in ``visit``: the structure recorder notes its values, the runner fires
    nodes there."""

    suspended = 0
    shapes_only = False  # see hooks.CallObserver

    def __init__(self, paths: dict[int, str], instrumented: frozenset = frozenset()) -> None:
        self.paths = paths  # id(module) -> path, for the observed modules
        self.instrumented = instrumented  # paths whose forward runs instrumented (``.source``)
        self.counts: dict[str, int] = defaultdict(int)
        self.source_stack: list[str] = []

    def on_call(self, module: nn.Module, call: Any, args: tuple, kwargs: dict) -> Any:
        path = self.paths.get(id(module))
        if path is None:
            return call(module, *args, **kwargs)
        if path in self.instrumented:
            body = lambda a, k: call_instrumented(self, module, path, a, k)  # noqa: E731
        else:
            body = lambda a, k: call(module, *a, **k)  # noqa: E731
        return self._count(path, body, args, kwargs)

    def on_op(self, path: str, fn: Any, args: tuple, kwargs: dict) -> Any:
        if path in self.instrumented:  # drilled into: the function it calls runs instrumented
            body = lambda a, k: call_instrumented_function(self, fn, path, a, k)  # noqa: E731
        else:
            body = lambda a, k: fn(*a, **k)  # noqa: E731
        return self._count(path, body, args, kwargs)

    def _count(self, path: str, body: Callable[[tuple, dict], Any], args: tuple, kwargs: dict) -> Any:
        n = self.counts[path]
        self.counts[path] += 1
        return self.visit(path, n, body, args, kwargs)

    def visit(self, path: str, call: int, body: Callable[[tuple, dict], Any], args: tuple, kwargs: dict) -> Any:
        """One call of ``path`` (its ``call``-th): run ``body(args, kwargs)``, return the output."""
        raise NotImplementedError


class StructureRecorder(CallCounter):
    """Notes every hook point's structure, in the order the forward reaches them."""

    shapes_only = True

    def __init__(self, paths: dict[int, str], structure: Structure, instrumented: frozenset = frozenset()) -> None:
        super().__init__(paths, instrumented)
        self.structure = structure

    def on_op(self, path: str, fn: Any, args: tuple, kwargs: dict) -> Any:
        from .source import callee

        self.structure.callees.setdefault(path, callee(fn))
        return super().on_op(path, fn, args, kwargs)

    def visit(self, path: str, call: int, body: Callable[[tuple, dict], Any], args: tuple, kwargs: dict) -> Any:
        self._note(HookPoint(path, "input", call), (args, kwargs))
        out = body(args, kwargs)
        self._note(HookPoint(path, "output", call), out)
        return out

    def _note(self, point: HookPoint, value: Any) -> None:
        self.structure.order[point] = len(self.structure.order)
        self.structure.skeletons[point] = skeleton(value)


def call_instrumented(observer: Any, module: nn.Module, path: str, args: tuple, kwargs: dict) -> Any:
    """Run a module's ``.source``-instrumented forward, its operations reported to ``observer``."""
    from .hooks import original_class
    from .source import instrument

    observer.source_stack.append(path)
    try:
        return instrument(original_class(module)).call(module, *args, **kwargs)
    finally:
        observer.source_stack.pop()


def call_instrumented_function(observer: Any, fn: Any, path: str, args: tuple, kwargs: dict) -> Any:
    """Run what operation ``path`` calls instrumented, its operations reported to ``observer``."""
    from .source import callee, instrument_callee

    observer.source_stack.append(path)
    try:
        return instrument_callee(callee(fn), path).call(*args, **kwargs)
    finally:
        observer.source_stack.pop()


def record_structure(named: dict[str, nn.Module], forward: Callable[[], Any],
                     instrumented: frozenset = frozenset()) -> Structure:
    """Run ``forward`` lazily with every module in ``named`` observed; nothing is evaluated."""
    structure = Structure()
    recorder = StructureRecorder({id(m): p for p, m in named.items()}, structure, instrumented)
    with observing(list(named.values()), recorder):
        forward()
    return structure
