"""``value.save()`` on every object, as nnsight mounts it (``CONFIG.APP.PYMOUNT``).

nnsight adds ``save`` to ``object`` with a C extension, so ``logits = list().save()`` works and a
list filled during a trace comes back. Here the same is done from Python: the method goes into
``object``'s own type dictionary (reached through the mapping proxy's referent) and CPython's type
cache is invalidated. Classes that define ``save`` themselves (mlxsight proxies, ``dict`` subclasses
with their own) are unaffected.
"""

from __future__ import annotations

import ctypes
import gc
from typing import Any, Callable


def mount(func: Callable[[Any], Any], name: str = "save") -> None:
    namespace = gc.get_referents(object.__dict__)[0]
    if namespace.get(name) is not None:
        return

    def method(self: Any) -> Any:
        return func(self)

    method.__name__ = name
    method.__doc__ = func.__doc__
    namespace[name] = method
    ctypes.pythonapi.PyType_Modified(ctypes.py_object(object))
