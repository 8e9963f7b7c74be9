"""pytest plugin (``-p conformance.plugin``): the backend ``import nnsight`` resolves to.

Loaded before the suite's own conftest, so the suite imports the chosen backend:
``MLXSIGHT_CONFORMANCE_BACKEND=nnsight`` the installed package, ``mlx`` mlxsight's shim through
``compat`` (exactly as ``python -m compat run --backend mlx`` does for a script).

On the nnsight backend, nnsight is adapted to this offline environment
(``conformance.environment.adapt_nnsight``).

``MLXSIGHT_CONFORMANCE_NNTERP=1`` applies the two adapters nnterp 1.3.0 needs on nnsight 0.8 (it
targets nnsight <= 0.7), identically on both backends:
  * ``nnsight.intervention.tracing.globals`` (0.7's home of ``Object``) is provided as a module
    holding ``nnsight.Object``;
  * ``Envoy._model`` (0.7's name for the wrapped module) reads ``Envoy._module``.
"""

from __future__ import annotations

import os
import sys
import types

BACKEND = os.environ.get("MLXSIGHT_CONFORMANCE_BACKEND", "nnsight")


def _prepare() -> None:
    from compat.runner import prepare

    from conformance.environment import adapt_nnsight

    prepare(BACKEND)
    import nnsight

    if getattr(nnsight, "BACKEND", "nnsight") != BACKEND:
        raise RuntimeError(f"asked for backend {BACKEND!r}, imported {nnsight.__file__}")
    if BACKEND == "nnsight":
        adapt_nnsight()
    if os.environ.get("MLXSIGHT_CONFORMANCE_NNTERP") == "1":
        _nnterp_adapters(nnsight)


def _nnterp_adapters(nnsight) -> None:
    tracing = sys.modules.get("nnsight.intervention.tracing") or types.ModuleType("nnsight.intervention.tracing")
    globals_ = types.ModuleType("nnsight.intervention.tracing.globals")
    globals_.Object = nnsight.Object
    tracing.globals = globals_
    sys.modules.setdefault("nnsight.intervention.tracing", tracing)
    sys.modules["nnsight.intervention.tracing.globals"] = globals_
    from nnsight.intervention.envoy import Envoy

    if not hasattr(Envoy, "_model"):
        Envoy._model = property(lambda self: self._module)


_prepare()


class _XdistHookspecs:
    """nnterp's conftest implements pytest-xdist's ``pytest_testnodedown``; without xdist installed
    pytest refuses an unknown hook, so declare it (it is never called in a single-process run)."""

    def pytest_testnodedown(self, node, error):
        """Declared for nnterp's conftest."""


def pytest_addhooks(pluginmanager):
    if not pluginmanager.has_plugin("xdist") and os.environ.get("MLXSIGHT_CONFORMANCE_NNTERP") == "1":
        import pluggy

        spec = pluggy.HookspecMarker("pytest")
        _XdistHookspecs.pytest_testnodedown = spec(_XdistHookspecs.pytest_testnodedown)
        pluginmanager.add_hookspecs(_XdistHookspecs)
