"""nnsight 0.8.1's import surface (``surface.json``, read from the real package by
``python -m compat.surface``), served by the shim.

A module the shim has a file for provides what mlxsight supports and routes every other public name
of that nnsight module through ``missing(...)``; a module it has no file for is created by
``Finder`` with nothing but that router. Either way, ``import``ing any nnsight 0.8.1 module works,
and using a name mlxsight does not provide raises an error naming the feature. Names nnsight itself
does not have fail as Python's own do.
"""

from __future__ import annotations

import dis
import importlib.abc
import importlib.machinery
import json
import os
import sys
import types

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "surface.json")) as _f:
    SURFACE: dict[str, list[str] | None] = json.load(_f)["modules"]

_IMPORT_FROM = dis.opmap["IMPORT_FROM"]


class NotProvided(AttributeError):
    """A public nnsight 0.8.1 name that mlxsight's nnsight surface does not provide."""


class NotProvidedImport(ImportError):
    """``from nnsight.x import name`` of a name mlxsight does not provide."""


def message(module: str, name: str) -> str:
    return (f"{module}.{name} (nnsight 0.8.1) is not provided by mlxsight's nnsight surface "
            f"(compat --backend mlx). Run the script on nnsight with "
            f"`python -m compat run --backend nnsight SCRIPT`; docs/compatibility.md lists what is supported.")


def missing(module: str):
    """A module ``__getattr__`` for ``module``: nnsight's public names fail naming the feature."""
    listed = SURFACE.get(module, ())
    public = None if listed is None else set(listed)  # None: not read, every public name counts

    def __getattr__(name: str):
        if name.startswith("_") or (public is not None and name not in public):
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        # `from m import name` turns an AttributeError into a generic ImportError that loses the
        # message; raise the import error ourselves when that is the statement asking.
        caller = sys._getframe(1)
        if caller.f_code.co_code[caller.f_lasti] == _IMPORT_FROM:
            raise NotProvidedImport(message(module, name), name=module)
        raise NotProvided(message(module, name))

    return __getattr__


def is_package(module: str) -> bool:
    return any(other.startswith(module + ".") for other in SURFACE)


class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Creates the nnsight 0.8.1 modules the shim has no file for (after the shim's own files)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in SURFACE:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=is_package(fullname))

    def create_module(self, spec):
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        module.__getattr__ = missing(module.__name__)
        module.__doc__ = f"nnsight 0.8.1's {module.__name__}: not provided by mlxsight (every name fails on use)."


def install() -> None:
    if not any(isinstance(f, Finder) for f in sys.meta_path):
        sys.meta_path.append(Finder())
