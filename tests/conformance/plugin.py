"""pytest plugin (``-p conformance.plugin``): the backend ``import nnsight`` resolves to.

Loaded before the suite's own conftest, so the suite imports the chosen backend:
``MLXSIGHT_CONFORMANCE_BACKEND=nnsight`` the installed package, ``mlx`` mlxsight's shim through
``compat`` (exactly as ``python -m compat run --backend mlx`` does for a script).

On the nnsight backend one fix is applied to nnsight itself, for this environment: with
transformers 5.23 a task's pipeline class is registered as a dotted string, so nnsight 0.8.1's
``TransformersModel._loaded_preprocessors`` finds no ``_load_tokenizer`` flag on it and a model that
is not dispatched at construction gets no tokenizer ("Impossible to guess which tokenizer to use").
The fix resolves the string first, as transformers' own ``pipeline()`` does.

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

    prepare(BACKEND)
    import nnsight

    if getattr(nnsight, "BACKEND", "nnsight") != BACKEND:
        raise RuntimeError(f"asked for backend {BACKEND!r}, imported {nnsight.__file__}")
    if BACKEND == "nnsight":
        _resolve_pipeline_impl()
    if os.environ.get("MLXSIGHT_CONFORMANCE_NNTERP") == "1":
        _nnterp_adapters(nnsight)


def _resolve_pipeline_impl() -> None:
    from nnsight.modeling.transformers import TransformersModel
    from transformers import pipelines

    flags = {"tokenizer": "_load_tokenizer", "image_processor": "_load_image_processor",
             "feature_extractor": "_load_feature_extractor", "processor": "_load_processor"}
    original = TransformersModel._loaded_preprocessors

    def _loaded_preprocessors(self):
        try:
            _, targeted, _ = pipelines.check_task(self.task)
            impl = targeted["impl"]
            if isinstance(impl, str):
                impl = pipelines._resolve_impl(impl)
        except Exception:  # noqa: BLE001 - nnsight's own fallback
            return original(self)
        return {attr for attr, flag in flags.items() if getattr(impl, flag, False)}

    TransformersModel._loaded_preprocessors = _loaded_preprocessors


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
