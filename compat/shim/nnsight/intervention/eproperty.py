"""``nnsight.intervention.eproperty``: served values defined on custom envoys.

``@eproperty(key="output")`` on an ``Envoy`` subclass defines an attribute that reads the envoy's
``key`` value through the decorated preprocess (``envoy.heads`` -> ``preprocess(envoy, output)``);
assigning it writes ``postprocess(envoy, value)`` (or the value) back to ``key``.

As in nnsight, one read per step and invoke is memoized (``envoy.heads is envoy.heads``), and with a
``transform`` an in-place edit of the view (``envoy.heads[:, 5] = 0``) writes
``transform(envoy, view, raw)`` back to ``key``, each time the view is edited.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable

from .._surface import missing

# tracer -> {(envoy, eproperty, invoke, step): view}: the views read in that trace
_VIEWS: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


class eproperty(property):
    def __init__(self, key: str | Callable | None = None, description: str | None = None) -> None:
        property.__init__(self)
        self.name: str | None = None
        self.key: str | None = None
        self.description = description
        self._preprocess: Callable | None = None
        self._postprocess: Callable | None = None
        self._transform: Callable | None = None
        if callable(key):  # bare @eproperty
            self(key)
        else:
            self.key = key

    def __call__(self, preprocess: Callable) -> "eproperty":
        self.name = preprocess.__name__
        self._preprocess = preprocess
        self.__doc__ = preprocess.__doc__
        if self.key is None:
            self.key = self.name
        return self

    def postprocess(self, func: Callable) -> "eproperty":
        self._postprocess = func
        return self

    def transform(self, func: Callable) -> "eproperty":
        """The write-back of in-place edits made on the view (kept for the class body to run)."""
        self._transform = func
        return self

    def __str__(self) -> str:
        return f"({self.name}): {self.description}"

    @property
    def location(self) -> str:
        """The envoy attribute ``key`` names: nnsight's ``"input"`` location is the raw
        ``(args, kwargs)``, which is ``.inputs`` (``.input`` is its first argument)."""
        return "inputs" if self.key == "input" else self.key

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            return self
        tracer = obj._tracer() if hasattr(type(obj), "_tracer") else None
        memo = key = None
        if tracer is not None:
            recorder = tracer.recorder
            invoke = recorder.invokes[-1].index if recorder.invokes else None
            memo = _VIEWS.setdefault(tracer, {})
            key = (id(obj), id(self), invoke, recorder.step)
            if key in memo:
                return memo[key][1]
        raw = getattr(obj, self.location)
        view = self._preprocess(obj, raw) if self._preprocess is not None else raw
        if memo is not None:
            memo[key] = (obj, view)  # the envoy is held so its id stays its own
            if self._transform is not None and hasattr(view, "_binds"):
                transform = self._transform
                view._binds.append(lambda edited: setattr(obj, self.location, transform(obj, edited, raw)))
        return view

    def __set__(self, obj: Any, value: Any) -> None:
        if self._postprocess is not None:
            value = self._postprocess(obj, value)
        setattr(obj, self.location, value)


__getattr__ = missing(__name__)
