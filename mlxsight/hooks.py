"""Hooking module calls by swapping an instance's class to a cached subclass.

The subclass only overrides ``__call__`` and keeps the class name, so parameters, paths, ``repr``
and ``isinstance`` are unchanged; restoring is assigning ``__class__`` back. Only the modules a
run needs are swapped, and every exit path restores them.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Iterator, Protocol

import mlx.nn as nn


class CallObserver(Protocol):
    """What a hooked module reports its calls to (the runner, or the structure recorder)."""

    suspended: int  # > 0: calls pass through unobserved
    shapes_only: bool  # the forward is only built to learn shapes: no real run (nothing is evaluated)

    def on_call(self, module: nn.Module, call: Any, args: tuple, kwargs: dict) -> Any:
        """Run ``call(module, *args, **kwargs)``, observing it; return what the forward continues with."""

    def on_op(self, path: str, fn: Any, args: tuple, kwargs: dict) -> Any:
        """The same for one operation of a ``.source``-instrumented forward."""


_local = threading.local()
_subclasses: dict[type, type] = {}


def active() -> CallObserver | None:
    return getattr(_local, "observer", None)


def _hooked_subclass(cls: type) -> type:
    sub = _subclasses.get(cls)
    if sub is None:
        original = cls.__call__

        def __call__(self, *args, **kwargs):
            observer = getattr(_local, "observer", None)
            if observer is None or observer.suspended:
                return original(self, *args, **kwargs)
            return observer.on_call(self, original, args, kwargs)

        sub = type(cls.__name__, (cls,), {
            "__call__": __call__, "__module__": cls.__module__, "__qualname__": cls.__qualname__,
            "_mlxsight_original_class": cls,
        })
        _subclasses[cls] = sub
    return sub


def original_class(module: nn.Module) -> type:
    return getattr(type(module), "_mlxsight_original_class", type(module))


_swap_lock = threading.Lock()
_holders: dict[int, int] = {}  # id(module) -> how many runs (on any thread) observe it now


class observing:
    """``with observing(modules, observer):`` reports calls of ``modules`` to ``observer``.

    A module's class is swapped by the first run that observes it and restored by the last, so
    runs on other threads sharing a module (two wrappers of one model) never unhook each other.
    A swap that nobody holds (left behind by an interrupt inside an earlier restore) is taken over
    and restored by the next run that observes the module.
    A plain class rather than a generator context manager: it is on every trace's path."""

    def __init__(self, modules: list[nn.Module], observer: CallObserver) -> None:
        self.modules, self.observer = modules, observer
        self.held: list[nn.Module] = []

    def __enter__(self) -> None:
        if active() is not None:
            raise RuntimeError("another mlxsight run is already observing module calls on this thread")
        try:
            _local.observer = self.observer
            with _swap_lock:
                for module in self.modules:
                    self.held.append(module)
                    key = id(module)
                    holders = _holders.get(key, 0)
                    _holders[key] = holders + 1
                    cls = type(module)
                    if holders == 0 and getattr(cls, "_mlxsight_original_class", None) is None:
                        # object.__setattr__: mlx's Module.__setattr__ would treat it as a parameter.
                        object.__setattr__(module, "__class__", _hooked_subclass(cls))
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc: Any) -> bool:
        try:
            with _swap_lock:
                while self.held:
                    module = self.held[-1]
                    key = id(module)
                    holders = _holders.get(key, 1) - 1
                    if holders > 0:
                        _holders[key] = holders
                    else:
                        _holders.pop(key, None)
                        object.__setattr__(module, "__class__", original_class(module))
                    self.held.pop()
        finally:
            _local.observer = None
        return False


@contextmanager
def suspended(observer: CallObserver) -> Iterator[None]:
    """Run module calls unobserved (ad hoc calls such as ``model.lm_head(h)`` consume no hook)."""
    observer.suspended += 1
    try:
        yield
    finally:
        observer.suspended -= 1
