"""The two backends a tool runs on: an mlxsight model (MLX) or an nnsight model (torch).

Tools use the nnsight-style public tracing API (``model.trace``, ``.output``, ``.save``), which both
backends share, so one code path serves both. What differs is gathered here: which ``save`` marks a
value, how a value becomes numpy and back, and a few array operations tools apply *after* a trace
(outside it, on plain backend tensors): ``softmax``, ``log_softmax``, ``tanh``, ``stack``.

The contract for a tool:

- ``kind(model)`` is ``"mlx"`` or ``"torch"`` (anything else is a ``TypeError``).
- ``run(model, inputs, read)`` opens ``model.trace(inputs)``, calls ``read(model)`` inside it (which
  must request module values in execution order, as nnsight requires), saves what it returns (any
  nesting of lists, tuples and dicts) and returns it with plain backend tensors as leaves.
- ``to_numpy`` / ``from_numpy`` cross to numpy; torch values are detached and run under
  ``torch.no_grad()`` unless ``grad=True``.

torch is imported only for nnsight models, so an MLX-only install never needs it.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import mlx.core as mx
import numpy as np

MLX, TORCH = "mlx", "torch"


def kind(model: Any) -> str:
    """``"mlx"`` for an mlxsight model, ``"torch"`` for an nnsight one."""
    from ..model import NNsight

    if isinstance(model, NNsight):
        return MLX
    if any(c.__module__.split(".")[0] == "nnsight" for c in type(model).__mro__):
        return TORCH
    raise TypeError(f"expected an mlxsight or nnsight model (e.g. LanguageModel), got {type(model).__name__}")


def loaded(model: Any) -> Any:
    """``model`` with its weights in memory: nnsight loads lazily (on the meta device) until the first
    trace, and a tool that reads weights or changes settings before tracing needs them now."""
    if kind(model) == TORCH and not getattr(model, "dispatched", True):
        model.dispatch()
    return model


def is_torch(value: Any) -> bool:
    return type(value).__module__.split(".")[0] == "torch"


def is_proxy(value: Any) -> bool:
    """An mlxsight value recorded inside a trace (nnsight hands real tensors instead)."""
    from ..proxy import Proxy

    return isinstance(value, Proxy)


def is_sequence(value: Any) -> bool:
    """A tuple or list output (also while an mlxsight trace records it)."""
    from ..proxy import example

    return isinstance(example(value), (tuple, list))


def to_numpy(value: Any, dtype: Any = None) -> np.ndarray:
    """A backend tensor (or a nested list of them) as a numpy array.

    Low-precision floats (bfloat16, float16) become float32; ``dtype`` casts further."""
    if isinstance(value, mx.array):
        if value.dtype in (mx.bfloat16, mx.float16):
            value = value.astype(mx.float32)
        out = np.array(value)
    elif is_torch(value):
        import torch

        value = value.detach().cpu()
        if value.dtype in (torch.bfloat16, torch.float16):
            value = value.float()
        out = value.numpy()
    elif isinstance(value, (list, tuple)) and value and not isinstance(value[0], (int, float)):
        out = np.stack([to_numpy(v) for v in value])
    else:
        out = np.asarray(value)
    return out.astype(dtype, copy=False) if dtype is not None else out


def from_numpy(model: Any, array: Any, like: Any = None) -> Any:
    """``array`` as a tensor of ``model``'s backend (dtype and device of ``like`` when given)."""
    array = np.asarray(array)
    if kind(model) == MLX:
        out = mx.array(array)
        return out.astype(like.dtype) if like is not None else out
    import torch

    out = torch.from_numpy(np.ascontiguousarray(array))
    return out.to(dtype=like.dtype, device=like.device) if like is not None else out


def save(model: Any, obj: Any) -> Any:
    """Mark ``obj`` (a value, or a container filled inside the trace) as saved, on ``model``'s backend."""
    if kind(model) == MLX:
        from ..tracer import save as mlx_save

        return mlx_save(obj)
    import nnsight

    return nnsight.save(obj)


@contextlib.contextmanager
def no_grad(model: Any, grad: bool = False) -> Iterator[None]:
    """``torch.no_grad()`` for nnsight models unless ``grad``; nothing for MLX (it is functional)."""
    if kind(model) == TORCH and not grad:
        import torch

        with torch.no_grad():
            yield
    else:
        yield


def run(model: Any, inputs: Any, read: Callable[[Any], Any], grad: bool = False, **trace_kwargs: Any) -> Any:
    """Trace ``model`` on ``inputs``; return what ``read(model)`` gave inside the trace, as values.

    ``inputs`` is anything ``model.trace`` takes; tools pass token ids (a list of ints, or of rows)
    so both backends see the same tokens."""
    with no_grad(model, grad):
        with model.trace(inputs, **trace_kwargs):
            saved = save(model, read(model))
    return saved


# -- operations on plain backend tensors (outside a trace) ------------------------------------

def softmax(x: Any, axis: int = -1) -> Any:
    if isinstance(x, mx.array):
        return mx.softmax(x.astype(mx.float32), axis=axis)
    return x.float().softmax(dim=axis)


def log_softmax(x: Any, axis: int = -1) -> Any:
    if isinstance(x, mx.array):
        x = x.astype(mx.float32)
        return x - mx.logsumexp(x, axis=axis, keepdims=True)
    return x.float().log_softmax(dim=axis)


def tanh(x: Any) -> Any:
    return mx.tanh(x) if isinstance(x, mx.array) else x.tanh()


def stack(values: list, axis: int = 0) -> Any:
    if isinstance(values[0], mx.array):
        return mx.stack(values, axis=axis)
    import torch

    return torch.stack(list(values), dim=axis)


def first(value: Any) -> Any:
    """The hidden states of a module output that may be a tuple (older transformers layers)."""
    return value[0] if isinstance(value, (tuple, list)) else value
