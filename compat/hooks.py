"""Where each backend hands saved values to the capture, and the mx -> torch value transform."""

from __future__ import annotations

import sys
from typing import Any, Callable

Listener = Callable[[str | None, int | None, dict[str, Any]], None]


def to_torch(value: Any, memo: dict[int, Any] | None = None) -> Any:
    """``mx.array``s -> torch tensors, through lists/tuples/dicts; aliases stay aliases.

    Lists and dicts are converted in place: they were built by the trace, and a script may
    hold them under several names.
    """
    import mlx.core as mx
    from mlxsight.cache import CacheEntries, CacheEntry
    from mlxsight.structure import ArraySpec
    from mlxsight.torch_ops import array_to_torch

    memo = {} if memo is None else memo
    if id(value) in memo:
        return memo[id(value)]
    if isinstance(value, mx.array):
        out = array_to_torch(value)
    elif isinstance(value, ArraySpec):  # a scan's value: a fake tensor, as nnsight's scan saves
        out = _fake(value)
    elif isinstance(value, list):
        memo[id(value)] = value
        value[:] = [to_torch(v, memo) for v in value]
        out = value
    elif isinstance(value, dict):
        memo[id(value)] = value
        for key in list(value):
            dict.__setitem__(value, key, to_torch(dict.__getitem__(value, key), memo))
        out = value
    elif isinstance(value, CacheEntry):  # tracer.cache() entries: converted in place, like dicts
        memo[id(value)] = value
        value.output, value.inputs = to_torch(value.output, memo), to_torch(value.inputs, memo)
        out = value
    elif isinstance(value, CacheEntries):  # a module's entries, one per call
        memo[id(value)] = value
        for entry in value:
            to_torch(entry, memo)
        out = value
    elif isinstance(value, tuple):
        items = [to_torch(v, memo) for v in value]
        out = type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    else:
        out = value
    memo[id(value)] = out
    return out


def _fake(spec: Any) -> Any:
    """A torch ``FakeTensor`` with ``spec``'s shape and dtype (no storage, nothing computed)."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    name = str(spec.dtype).removeprefix("mlx.core.")
    with FakeTensorMode():
        return torch.empty(spec.shape, dtype=torch.bool if name == "bool_" else getattr(torch, name))


def install_mlx(listener: Listener | None) -> None:
    """Torch semantics for nnsight scripts: proxy methods as torch reads them, saved values converted
    to torch at trace exit, sampled generation on torch's random stream; report values to ``listener``."""
    import mlxsight

    from mlxsight.context import set_module_view, set_sampler
    from nnsight.modeling.torch_module import view_of  # the shim's: envoy._module is a torch view

    from .sampling import torch_sampler

    mlxsight.set_value_transform(to_torch)
    set_module_view(view_of)
    set_sampler(torch_sampler)  # do_sample draws from torch's random stream, as transformers' generate
    if hasattr(mlxsight, "set_torch_semantics"):  # proxy methods read with torch's meaning (.max(1), .view)
        mlxsight.set_torch_semantics(True)
    if listener is not None:
        mlxsight.add_exit_listener(lambda info, values: listener(info.get("file"), info.get("line"), values))


def install_nnsight(listener: Listener) -> None:
    """Wrap nnsight 0.8.1's ``push_result`` (saved values at depth 1) and ``Tracer.__exit__``.

    The outermost trace may push several times (the invoke-collecting body, then each invoke's
    worker); the pushes are merged in order and reported once, when that trace's ``__exit__``
    returns with the nesting depth back at 0. Nothing in the installed package is modified.
    """
    import nnsight.tracing.tracer as ttracer

    original_push = ttracer.push_result
    pending: dict[str, Any] = {}
    where: list = [None, None]

    def push_result(frame, variables):
        if getattr(ttracer._local, "depth", 0) == 1:
            saves = ttracer._saves()
            pending.update({k: v for k, v in variables.items() if id(v) in saves})
            # A list or dict made before the trace and saved in it is not rebound, so nnsight pushes
            # nothing for it, but the caller sees it filled under its name (mlxsight reports it too).
            for name, value in list(frame.f_locals.items()):
                if type(value) in (list, dict) and id(value) in saves and name not in pending:
                    pending[name] = value
            where[:] = [frame.f_code.co_filename, frame.f_lineno]
        return original_push(frame, variables)

    # Every module that did `from ..tracing.tracer import push_result` holds its own reference.
    for name, module in list(sys.modules.items()):
        if name.startswith("nnsight") and getattr(module, "push_result", None) is original_push:
            module.push_result = push_result
    for name in ("nnsight.intervention.tracer", "nnsight.intervention.backward", "nnsight.intervention.iterator"):
        __import__(name)
        if getattr(sys.modules[name], "push_result", None) is original_push:
            sys.modules[name].push_result = push_result

    original_exit = ttracer.Tracer.__exit__

    def __exit__(self, exc_type, exc, tb):
        frame = getattr(getattr(self, "info", None), "frame", None)
        line = frame.f_lineno if frame is not None else None
        try:
            result = original_exit(self, exc_type, exc, tb)
        except BaseException:
            if getattr(ttracer._local, "depth", 0) == 0:
                pending.clear()
            raise
        if getattr(ttracer._local, "depth", 0) == 0 and result:
            values = dict(pending)
            pending.clear()
            listener(where[0] or (frame.f_code.co_filename if frame else None), line or where[1], values)
        return result

    ttracer.Tracer.__exit__ = __exit__
    # Subclasses that override __exit__ call super(); re-point any that copied the function.
    for cls in _subclasses(ttracer.Tracer):
        if cls.__dict__.get("__exit__") is original_exit:
            cls.__exit__ = __exit__


def _subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out
