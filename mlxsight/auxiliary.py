"""Foreign modules: a module that is not an MLX module (a torch SAE, an adapter) attached to a
traced model, as nnsight scripts attach them (``model.layers[6].sae = sae``).

nnsight mirrors an attached module as an envoy; so does mlxsight: its children are envoys, and a
call of it on trace values is one operation of the graph (``ForeignCall``), run when the graph
runs, with the values converted at that boundary by the module's ``ForeignKind``. Called with
``hook=True`` the call is observed: it and every module under it report their calls to the run's
observer, so their ``.input``/``.output`` are served like any module's (``Graph.hosted``).
MLX modules attached the same way are ordinary children of the tree and need none of this.

A kind is found by type; torch's (``torch_modules.TorchKind``) is imported only when torch is.
"""

from __future__ import annotations

import sys
from typing import Any, Protocol

import mlx.nn as nn

from .hooks import active


class ForeignKind(Protocol):
    """How mlxsight walks and runs one kind of foreign module."""

    def children(self, module: Any) -> dict[str, Any]:
        """The module's direct submodules, by name."""

    def call(self, module: Any, method: str | None, args: tuple, kwargs: dict,
             paths: dict[int, str], observer: Any) -> Any:
        """Run ``module`` (or its ``method``) on MLX values and return MLX values; each module in
        ``paths`` (by id) reports its calls to ``observer.on_op(path, ...)`` meanwhile, with MLX values."""


def foreign_kind(obj: Any) -> ForeignKind | None:
    """The kind of a foreign module, or None (an MLX module, or no module at all)."""
    if isinstance(obj, nn.Module):
        return None
    torch = sys.modules.get("torch")  # nothing can be a torch module unless torch is imported
    if torch is not None and isinstance(obj, torch.nn.Module):
        from .torch_modules import TORCH_KIND

        return TORCH_KIND
    return None


def named_modules(module: Any, path: str) -> dict[str, Any]:
    """``path -> module`` for a foreign ``module`` at ``path`` and every module under it."""
    kind = foreign_kind(module)
    out = {path: module}
    for name, child in kind.children(module).items():
        out.update(named_modules(child, f"{path}.{name}"))
    return out


class ForeignCall:
    """The ``call_function`` target of a foreign module's call (``sae(h)``, ``sae.encode(h)``)."""

    pure = False  # the module's own code (torch or a user's): not known to be free of side effects

    def __init__(self, module: Any, path: str, method: str | None = None, hook: bool = False) -> None:
        self.module, self.path, self.method, self.hook = module, path, method, hook
        self.kind = foreign_kind(module)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        observer = active()
        watched = self.hook and observer is not None and not observer.suspended
        paths = {id(m): p for p, m in named_modules(self.module, self.path).items()} if watched else {}
        return self.kind.call(self.module, self.method, args, kwargs, paths, observer if watched else None)

    def __repr__(self) -> str:
        name = ".".join(p for p in ("model", self.path) if p) + (f".{self.method}" if self.method else "")
        return f"{name}[{type(self.module).__name__}]" + ("<hook>" if self.hook else "")
