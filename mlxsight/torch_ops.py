"""torch operations run on MLX arrays, with torch's signatures and semantics.

nnsight scripts call ``torch.softmax(p, dim=-1)``, ``F.gelu(x)``, ``x.max(dim=-1)``... on values inside
a trace. The proxy records those calls; when the graph runs, this module replays them on ``mx.array``s.
Each op is one plain function written with torch's signature (positional and keyword arguments as
torch names them), registered under the torch names that reach it. Anything not registered raises
``UnsupportedTorchOp`` naming the torch call: never a silent wrong answer.

torch is never imported here unless the process already did (only torch objects need recognising).
"""

from __future__ import annotations

import builtins
import math
import sys
from collections import namedtuple
from typing import Any, Callable, Iterable

import mlx.core as mx
import numpy as np

__all__ = ["UnsupportedTorchOp", "ValuesIndices", "call_tensor_method", "call_torch_function", "describe",
           "is_supported", "mx_dtype", "supported_ops", "to_mlx", "torch_dtype", "translate_function"]


class UnsupportedTorchOp(NotImplementedError):
    """A torch call mlxsight cannot run on MLX arrays."""

    def __init__(self, op: str, detail: str = "") -> None:
        self.op = op
        message = (f"{op} is not translated to MLX by mlxsight; use mlxsight.apply(...) with an "
                   "mlx.core function")
        super().__init__(f"{message} ({detail})" if detail else message)


ValuesIndices = namedtuple("ValuesIndices", ["values", "indices"])  # torch.return_types.max & co.

# ----------------------------------------------------------------------------------------------
# dtypes and argument conversion

_DTYPES = {  # torch dtype name -> MLX dtype
    "float32": mx.float32, "float": mx.float32, "float16": mx.float16, "half": mx.float16,
    "bfloat16": mx.bfloat16, "float64": mx.float64, "double": mx.float64, "int64": mx.int64,
    "long": mx.int64, "int32": mx.int32, "int": mx.int32, "int16": mx.int16, "short": mx.int16,
    "int8": mx.int8, "uint8": mx.uint8, "uint16": mx.uint16, "uint32": mx.uint32, "uint64": mx.uint64,
    "bool": mx.bool_, "complex64": mx.complex64,
}
_TORCH_NAMES = {mx.float32: "float32", mx.float16: "float16", mx.bfloat16: "bfloat16",
                mx.float64: "float64", mx.int64: "int64", mx.int32: "int32", mx.int16: "int16",
                mx.int8: "int8", mx.uint8: "uint8", mx.uint16: "uint16", mx.uint32: "uint32",
                mx.uint64: "uint64", mx.bool_: "bool", mx.complex64: "complex64"}
_PY_TYPES = {float: mx.float32, int: mx.int64, bool: mx.bool_}


def _torch() -> Any:
    """torch if the process already imported it (nothing can be a torch object otherwise)."""
    return sys.modules.get("torch")


def _is_torch_dtype(obj: Any) -> bool:
    torch = _torch()
    return torch is not None and isinstance(obj, torch.dtype)


def mx_dtype(dtype: Any) -> mx.Dtype:
    """The MLX dtype for a torch dtype (``torch.float16``), an MLX dtype, a name or a Python type."""
    if isinstance(dtype, mx.Dtype):
        return dtype
    if dtype in _PY_TYPES:
        return _PY_TYPES[dtype]
    if _is_torch_dtype(dtype) or isinstance(dtype, str):
        name = str(dtype).removeprefix("torch.")
        if name in _DTYPES:
            return _DTYPES[name]
    raise UnsupportedTorchOp(f"dtype {dtype!r}", "no MLX equivalent")


mlx_dtype = mx_dtype  # the earlier name


def torch_dtype(dtype: mx.Dtype) -> Any:
    """The torch dtype for an MLX dtype (imports torch)."""
    import torch

    return getattr(torch, _TORCH_NAMES[dtype])


def _is_device(obj: Any) -> bool:
    torch = _torch()
    if obj is None or (torch is not None and isinstance(obj, torch.device)):
        return True
    return isinstance(obj, str) and obj.split(":")[0] in ("cpu", "cuda", "mps", "meta", "xpu", "gpu")


def to_mlx(obj: Any) -> Any:
    """``obj`` with torch tensors turned into ``mx.array`` and ``torch.Size`` into tuples (nested
    lists/tuples/dicts walked; dtypes, devices and everything else left as they are)."""
    torch = _torch()
    if torch is None:
        return obj
    if isinstance(obj, torch.Size):
        return tuple(int(d) for d in obj)
    if isinstance(obj, torch.Tensor):
        tensor = obj.detach().cpu()
        if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16
            return mx.array(tensor.float().numpy()).astype(mx.bfloat16)
        return mx.array(tensor.numpy(), dtype=mx_dtype(tensor.dtype))
    if type(obj) in (list, tuple):
        return type(obj)(to_mlx(o) for o in obj)
    if type(obj) is dict:
        return {k: to_mlx(v) for k, v in obj.items()}
    return obj


def array_to_torch(array: mx.array) -> Any:
    """One ``mx.array`` as a torch tensor (imports torch; bfloat16 through float32, numpy has none)."""
    import torch

    if array.dtype == mx.bfloat16:
        return torch.from_numpy(np.array(array.astype(mx.float32))).to(torch.bfloat16)
    return torch.from_numpy(np.array(array))


def to_torch(obj: Any) -> Any:
    """``to_mlx``'s inverse: ``obj`` with ``mx.array``s turned into torch tensors (new lists, tuples
    and dicts; everything else as it is)."""
    if isinstance(obj, mx.array):
        return array_to_torch(obj)
    if type(obj) in (list, tuple):
        return type(obj)(to_torch(o) for o in obj)
    if type(obj) is dict:
        return {k: to_torch(v) for k, v in obj.items()}
    return obj


# ----------------------------------------------------------------------------------------------
# helpers shared by the ops

_IGNORED_KWARGS = frozenset({"device", "requires_grad", "layout", "pin_memory", "memory_format",
                             "non_blocking", "_stacklevel", "copy", "generator"})


def _arr(x: Any) -> mx.array:
    return x if isinstance(x, mx.array) else mx.array(x)


def _ints(args: tuple) -> tuple:
    """Shapes and dim lists given as ``f(2, 3)`` or ``f((2, 3))`` (torch accepts both)."""
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        return tuple(args[0])
    return tuple(args)


def _axes(dim: Any, ndim: int) -> list[int] | None:
    """torch ``dim`` (int, sequence or None) as a list of non-negative axes; None means all, and so
    does an empty sequence (torch's reductions treat ``dim=()`` as every dim)."""
    if dim is None:
        return None
    dims = [dim] if isinstance(dim, int) else list(dim)
    return [d % builtins.max(ndim, 1) for d in dims] or None


def _is_int(x: mx.array) -> bool:
    return mx.issubdtype(x.dtype, mx.integer) or x.dtype == mx.bool_


def _acc_dtype(x: mx.array, dtype: Any) -> mx.array:
    """torch's sum/prod/cumsum accumulate integers and bools as int64."""
    if dtype is not None:
        return x.astype(mx_dtype(dtype))
    return x.astype(mx.int64) if _is_int(x) else x


def _cast(x: mx.array, dtype: Any) -> mx.array:
    return x if dtype is None else x.astype(mx_dtype(dtype))


def _reduce(fn: Callable, x: mx.array, dim: Any, keepdim: bool) -> mx.array:
    axes = _axes(dim, x.ndim)
    if x.ndim == 0:
        return fn(x)
    return fn(x, axis=axes, keepdims=keepdim) if axes is not None else fn(x, keepdims=keepdim)


def _binary(fn: Callable) -> Callable:
    def op(input: Any, other: Any, *, out: None = None) -> mx.array:
        return fn(input, other)

    op.__name__ = fn.__name__
    return op


def _unary(fn: Callable) -> Callable:
    def op(input: mx.array, *, out: None = None) -> mx.array:
        return fn(_arr(input))

    op.__name__ = getattr(fn, "__name__", "op")
    return op


def _reflected(fn: Callable) -> Callable:
    return lambda self, other: fn(other, self)


# ----------------------------------------------------------------------------------------------
# elementwise

def add(input: Any, other: Any, *, alpha: Any = 1, out: None = None) -> mx.array:
    return mx.add(input, other if alpha == 1 else mx.multiply(other, alpha))


def sub(input: Any, other: Any, *, alpha: Any = 1, out: None = None) -> mx.array:
    return mx.subtract(input, other if alpha == 1 else mx.multiply(other, alpha))


def rsub(input: Any, other: Any, *, alpha: Any = 1) -> mx.array:
    return sub(other, input, alpha=alpha)


def _trunc(x: mx.array) -> mx.array:
    return mx.where(x < 0, mx.ceil(x), mx.floor(x))


def div(input: Any, other: Any, *, rounding_mode: str | None = None, out: None = None) -> mx.array:
    if rounding_mode is None:
        return mx.divide(input, other)
    if rounding_mode == "floor":
        return mx.floor_divide(input, other)
    if rounding_mode == "trunc":
        a, b = _arr(input), _arr(other)
        if _is_int(a) and _is_int(b):
            q = mx.floor_divide(a, b)
            return mx.where((q < 0) & (mx.remainder(a, b) != 0), q + 1, q)
        return _trunc(mx.divide(a, b))
    raise ValueError(f"div expected rounding_mode to be one of None, 'trunc', or 'floor', got {rounding_mode!r}")


def fmod(input: Any, other: Any, *, out: None = None) -> mx.array:
    return mx.subtract(input, mx.multiply(div(input, other, rounding_mode="trunc"), other))


def pow(input: Any, exponent: Any, *, out: None = None) -> mx.array:  # noqa: A001 - torch's name
    return mx.power(input, exponent)


def clamp(input: mx.array, min: Any = None, max: Any = None, *, out: None = None) -> mx.array:  # noqa: A002
    if min is None and max is None:
        raise ValueError("torch.clamp: at least one of 'min' or 'max' must not be None")
    x = input
    if min is not None:  # a Python bound keeps the tensor's dtype, as in torch
        x = mx.maximum(x, min) if isinstance(min, mx.array) else mx.maximum(x, min).astype(input.dtype)
    if max is not None:
        x = mx.minimum(x, max) if isinstance(max, mx.array) else mx.minimum(x, max).astype(input.dtype)
    return x


def where(condition: mx.array, input: Any = None, other: Any = None, *, out: None = None) -> Any:
    if input is None and other is None:
        return nonzero(condition, as_tuple=True)
    return mx.where(condition, input, other)


def nonzero(input: mx.array, *, as_tuple: bool = False, out: None = None) -> Any:
    # data-dependent shape: computed on the concrete values
    values = np.array(input.astype(mx.float32) if input.dtype == mx.bfloat16 else input)
    idx = np.nonzero(values)
    if as_tuple:
        return tuple(mx.array(i.astype(np.int64)) for i in idx)
    return mx.array(np.stack(idx, axis=-1).astype(np.int64))


def masked_fill(input: mx.array, mask: mx.array, value: Any) -> mx.array:
    return mx.where(mask, _arr(value).astype(input.dtype), input)


def lerp(input: mx.array, end: mx.array, weight: Any, *, out: None = None) -> mx.array:
    return input + weight * (end - input)


def isclose(input: mx.array, other: mx.array, rtol: float = 1e-5, atol: float = 1e-8,
            equal_nan: bool = False) -> mx.array:
    return mx.isclose(input, other, rtol=rtol, atol=atol, equal_nan=equal_nan)


def nan_to_num(input: mx.array, nan: float = 0.0, posinf: float | None = None, neginf: float | None = None,
               *, out: None = None) -> mx.array:
    return mx.nan_to_num(input, nan=nan, posinf=posinf, neginf=neginf)


def round_(input: mx.array, *, decimals: int = 0, out: None = None) -> mx.array:
    return mx.round(input, decimals)


def sign(input: mx.array, *, out: None = None) -> mx.array:
    return mx.sign(input)


# ----------------------------------------------------------------------------------------------
# activations (torch.* and torch.nn.functional.*)

def _no_inplace(name: str, inplace: bool) -> None:
    if inplace:
        raise UnsupportedTorchOp(f"torch.nn.functional.{name}(inplace=True)",
                                 "in-place activations: assign the result instead")


def relu(input: mx.array, inplace: bool = False) -> mx.array:
    _no_inplace("relu", inplace)
    return mx.maximum(input, 0).astype(input.dtype)


def gelu(input: mx.array, approximate: str = "none") -> mx.array:
    if approximate == "none":
        return 0.5 * input * (1 + mx.erf(input / math.sqrt(2.0)))
    if approximate == "tanh":
        return 0.5 * input * (1 + mx.tanh(math.sqrt(2.0 / math.pi) * (input + 0.044715 * input ** 3)))
    raise ValueError(f"approximate argument must be either none or tanh, got {approximate!r}")


def silu(input: mx.array, inplace: bool = False) -> mx.array:
    _no_inplace("silu", inplace)
    return input * mx.sigmoid(input)


def softplus(input: mx.array, beta: float = 1.0, threshold: float = 20.0) -> mx.array:
    scaled = input * beta
    return mx.where(scaled > threshold, input, mx.logaddexp(scaled, 0.0) / beta)


def leaky_relu(input: mx.array, negative_slope: float = 0.01, inplace: bool = False) -> mx.array:
    _no_inplace("leaky_relu", inplace)
    return mx.where(input >= 0, input, input * negative_slope)


def elu(input: mx.array, alpha: float = 1.0, inplace: bool = False) -> mx.array:
    _no_inplace("elu", inplace)
    return mx.where(input > 0, input, alpha * (mx.exp(input) - 1))


def glu(input: mx.array, dim: int = -1) -> mx.array:
    a, b = mx.split(input, 2, axis=dim)
    return a * mx.sigmoid(b)


def logsigmoid(input: mx.array) -> mx.array:
    return -mx.logaddexp(-input, 0.0)


def _softmax_dim(x: mx.array, dim: int | None) -> int:
    # torch's implicit dim (deprecated, but still what it computes)
    if dim is not None:
        return dim
    return 0 if x.ndim in (0, 1, 3) else 1


def softmax(input: mx.array, dim: int | None = None, dtype: Any = None, *, _stacklevel: int = 3) -> mx.array:
    x = _cast(input, dtype)
    return mx.softmax(x, axis=_softmax_dim(x, dim), precise=True)


def log_softmax(input: mx.array, dim: int | None = None, dtype: Any = None, *, _stacklevel: int = 3) -> mx.array:
    x = _cast(input, dtype)
    return x - mx.logsumexp(x, axis=_softmax_dim(x, dim), keepdims=True)


def dropout(input: mx.array, p: float = 0.5, training: bool = True, inplace: bool = False) -> mx.array:
    if training and p > 0:
        raise UnsupportedTorchOp("torch.nn.functional.dropout(training=True)",
                                 "random masks cannot match torch; pass training=False")
    return input


# ----------------------------------------------------------------------------------------------
# reductions

def sum(input: mx.array, dim: Any = None, keepdim: bool = False, *, dtype: Any = None,  # noqa: A001
        out: None = None) -> mx.array:
    return _reduce(mx.sum, _acc_dtype(input, dtype), dim, keepdim)


def prod(input: mx.array, dim: Any = None, keepdim: bool = False, *, dtype: Any = None,
         out: None = None) -> mx.array:
    return _reduce(mx.prod, _acc_dtype(input, dtype), dim, keepdim)


def mean(input: mx.array, dim: Any = None, keepdim: bool = False, *, dtype: Any = None,
         out: None = None) -> mx.array:
    return _reduce(mx.mean, _cast(input, dtype), dim, keepdim)


def _ddof(unbiased: Any, correction: Any) -> int:
    if correction is not None:
        return int(correction)
    return 0 if unbiased is False else 1  # torch's default is unbiased


def var(input: mx.array, dim: Any = None, unbiased: Any = None, keepdim: bool = False, *,
        correction: Any = None, out: None = None) -> mx.array:
    if isinstance(dim, bool):  # torch.var(input, unbiased) overload
        dim, unbiased = None, dim
    return mx.var(input, axis=_axes(dim, input.ndim), keepdims=keepdim, ddof=_ddof(unbiased, correction))


def std(input: mx.array, dim: Any = None, unbiased: Any = None, keepdim: bool = False, *,
        correction: Any = None, out: None = None) -> mx.array:
    return mx.sqrt(var(input, dim, unbiased, keepdim, correction=correction))


def var_mean(input: mx.array, dim: Any = None, unbiased: Any = None, keepdim: bool = False, *,
             correction: Any = None) -> tuple:
    if isinstance(dim, bool):
        dim, unbiased = None, dim
    return var(input, dim, unbiased, keepdim, correction=correction), mean(input, dim, keepdim)


def std_mean(input: mx.array, dim: Any = None, unbiased: Any = None, keepdim: bool = False, *,
             correction: Any = None) -> tuple:
    if isinstance(dim, bool):
        dim, unbiased = None, dim
    return std(input, dim, unbiased, keepdim, correction=correction), mean(input, dim, keepdim)


def logsumexp(input: mx.array, dim: Any = None, keepdim: bool = False, *, out: None = None) -> mx.array:
    return _reduce(mx.logsumexp, input, dim, keepdim)


def amax(input: mx.array, dim: Any = (), keepdim: bool = False, *, out: None = None) -> mx.array:
    return _reduce(mx.max, input, None if dim == () else dim, keepdim)


def amin(input: mx.array, dim: Any = (), keepdim: bool = False, *, out: None = None) -> mx.array:
    return _reduce(mx.min, input, None if dim == () else dim, keepdim)


def all(input: mx.array, dim: Any = None, keepdim: bool = False, *, out: None = None) -> mx.array:  # noqa: A001
    if dim == () or dim == []:  # torch: no reduction at all here, unlike sum
        return input.astype(mx.bool_)
    return _reduce(mx.all, input, dim, keepdim)


def any(input: mx.array, dim: Any = None, keepdim: bool = False, *, out: None = None) -> mx.array:  # noqa: A001
    if dim == () or dim == []:
        return input.astype(mx.bool_)
    return _reduce(mx.any, input, dim, keepdim)


def count_nonzero(input: mx.array, dim: Any = None) -> mx.array:
    return _reduce(mx.sum, (input != 0).astype(mx.int64), dim, False)


def _arg(fn: Callable, input: mx.array, dim: int | None, keepdim: bool) -> mx.array:
    if dim is None:
        out = fn(input.reshape(-1), axis=0)
        out = out.reshape((1,) * input.ndim) if keepdim else out
    else:
        out = fn(input, axis=dim, keepdims=keepdim)
    return out.astype(mx.int64)  # torch's index dtype (MLX gives uint32)


def argmax(input: mx.array, dim: int | None = None, keepdim: bool = False, *, out: None = None) -> mx.array:
    return _arg(mx.argmax, input, dim, keepdim)


def argmin(input: mx.array, dim: int | None = None, keepdim: bool = False, *, out: None = None) -> mx.array:
    return _arg(mx.argmin, input, dim, keepdim)


def _extreme(name: str, fn: Callable, argfn: Callable, pairwise: Callable) -> Callable:
    """torch.max/min: no dim -> a scalar; a dim -> (values, indices); a tensor -> elementwise."""

    def op(input: mx.array, dim: Any = None, keepdim: bool = False, *, other: Any = None,
           out: None = None) -> Any:
        if isinstance(dim, mx.array) or other is not None:
            return pairwise(input, dim if other is None else other)
        if dim is None:
            return fn(input)
        indices = argfn(input, axis=dim, keepdims=True)
        values = mx.take_along_axis(input, indices, axis=dim)
        if not keepdim:
            values, indices = values.squeeze(dim), indices.squeeze(dim)
        return ValuesIndices(values, indices.astype(mx.int64))

    op.__name__ = name
    return op


max = _extreme("max", mx.max, mx.argmax, mx.maximum)  # noqa: A001
min = _extreme("min", mx.min, mx.argmin, mx.minimum)  # noqa: A001


def _sorted_indices(input: mx.array, dim: int, descending: bool) -> mx.array:
    if not descending:
        return mx.argsort(input, axis=dim)
    unsigned = input.dtype == mx.bool_ or mx.issubdtype(input.dtype, mx.unsignedinteger)
    return mx.argsort(-(input.astype(mx.int64) if unsigned else input), axis=dim)


def sort(input: mx.array, dim: int = -1, descending: bool = False, stable: bool = False, *,
         out: None = None) -> ValuesIndices:
    indices = _sorted_indices(input, dim, descending)
    return ValuesIndices(mx.take_along_axis(input, indices, axis=dim), indices.astype(mx.int64))


def argsort(input: mx.array, dim: int = -1, descending: bool = False, stable: bool = False) -> mx.array:
    return _sorted_indices(input, dim, descending).astype(mx.int64)


def topk(input: mx.array, k: int, dim: int = -1, largest: bool = True, sorted: bool = True, *,  # noqa: A002
         out: None = None) -> ValuesIndices:
    order = _sorted_indices(input, dim, descending=largest)
    indices = mx.take(order, mx.arange(k), axis=dim)
    return ValuesIndices(mx.take_along_axis(input, indices, axis=dim), indices.astype(mx.int64))


def median(input: mx.array, dim: int | None = None, keepdim: bool = False, *, out: None = None) -> Any:
    if dim is None:  # torch: the lower of the two middle values
        flat = mx.sort(input.reshape(-1))
        return flat[(flat.size - 1) // 2]
    order = mx.argsort(input, axis=dim)
    mid = mx.take(order, mx.array([(input.shape[dim] - 1) // 2]), axis=dim)
    values = mx.take_along_axis(input, mid, axis=dim)
    if not keepdim:
        values, mid = values.squeeze(dim), mid.squeeze(dim)
    return ValuesIndices(values, mid.astype(mx.int64))


def cumsum(input: mx.array, dim: int, *, dtype: Any = None, out: None = None) -> mx.array:
    return mx.cumsum(_acc_dtype(input, dtype), axis=dim)


def cumprod(input: mx.array, dim: int, *, dtype: Any = None, out: None = None) -> mx.array:
    return mx.cumprod(_acc_dtype(input, dtype), axis=dim)


def _vector_norm(x: mx.array, p: Any, axes: list[int] | None, keepdim: bool) -> mx.array:
    a = mx.abs(x)
    if p == math.inf:
        return _reduce(mx.max, a, axes, keepdim)
    if p == -math.inf:
        return _reduce(mx.min, a, axes, keepdim)
    if p == 0:
        return _reduce(mx.sum, (a != 0).astype(x.dtype), axes, keepdim)
    if p == 1:
        return _reduce(mx.sum, a, axes, keepdim)
    if p == 2:
        return mx.sqrt(_reduce(mx.sum, a * a, axes, keepdim))
    return mx.power(_reduce(mx.sum, mx.power(a, p), axes, keepdim), 1.0 / p)


def norm(input: mx.array, p: Any = "fro", dim: Any = None, keepdim: bool = False, out: None = None,
         dtype: Any = None) -> mx.array:
    x = _cast(input, dtype)
    if p == "nuc":
        raise UnsupportedTorchOp("torch.norm(p='nuc')")
    if p == "fro" or p is None:
        p = 2
    elif isinstance(p, str):
        raise RuntimeError(f"only valid string values are 'fro' and 'nuc', found {p}")
    return _vector_norm(x, p, _axes(dim, x.ndim), keepdim)  # torch.norm is entrywise for numeric p


def vector_norm(x: mx.array, ord: Any = 2, dim: Any = None, keepdim: bool = False, *,  # noqa: A002
                dtype: Any = None, out: None = None) -> mx.array:
    return _vector_norm(_cast(x, dtype), ord, _axes(dim, x.ndim), keepdim)


def linalg_norm(A: mx.array, ord: Any = None, dim: Any = None, keepdim: bool = False, *,  # noqa: A002, N803
                dtype: Any = None, out: None = None) -> mx.array:
    x = _cast(A, dtype)
    axes = _axes(dim, x.ndim)
    matrix = (axes is not None and len(axes) == 2) or (axes is None and ord is not None and x.ndim == 2)
    if ord is None or (matrix and ord == "fro"):
        return _vector_norm(x, 2, axes, keepdim)
    if matrix:
        raise UnsupportedTorchOp(f"torch.linalg.norm(ord={ord!r}) of a matrix")
    if axes is None and x.ndim != 1:
        raise RuntimeError("linalg.norm: If dim is not specified but ord is, the input must be 1D or 2D")
    return _vector_norm(x, ord, axes, keepdim)


# ----------------------------------------------------------------------------------------------
# products

def matmul(input: mx.array, other: mx.array, *, out: None = None) -> mx.array:
    if input.ndim == 1 and other.ndim == 1:
        return mx.sum(input * other)
    return mx.matmul(input, other)


def dot(input: mx.array, other: mx.array, *, out: None = None) -> mx.array:
    return mx.sum(input * other)


def outer(input: mx.array, vec2: mx.array, *, out: None = None) -> mx.array:
    return mx.outer(input, vec2)


def einsum(equation: str, *operands: Any) -> mx.array:
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    return mx.einsum(equation, *operands)


def linear(input: mx.array, weight: mx.array, bias: mx.array | None = None) -> mx.array:
    out = mx.matmul(input, weight.T)
    return out if bias is None else out + bias


def baddbmm(input: mx.array, batch1: mx.array, batch2: mx.array, *, beta: Any = 1, alpha: Any = 1,
            out: None = None) -> mx.array:
    return beta * input + alpha * mx.matmul(batch1, batch2)


# ----------------------------------------------------------------------------------------------
# normalisation, distances, losses

def _last_axes(x: mx.array, normalized_shape: Any) -> list[int]:
    n = len(normalized_shape) if isinstance(normalized_shape, (tuple, list)) else 1
    return list(range(x.ndim - n, x.ndim))


def layer_norm(input: mx.array, normalized_shape: Any, weight: mx.array | None = None,
               bias: mx.array | None = None, eps: float = 1e-5) -> mx.array:
    axes = _last_axes(input, normalized_shape)
    mu = mx.mean(input, axis=axes, keepdims=True)
    out = (input - mu) * mx.rsqrt(mx.var(input, axis=axes, keepdims=True) + eps)
    if weight is not None:
        out = out * weight
    return out if bias is None else out + bias


def rms_norm(input: mx.array, normalized_shape: Any, weight: mx.array | None = None,
             eps: float | None = None) -> mx.array:
    axes = _last_axes(input, normalized_shape)
    if eps is None:  # torch: the dtype's machine epsilon
        eps = float(np.finfo(np.float16 if input.dtype == mx.float16 else np.float32).eps)
    out = input * mx.rsqrt(mx.mean(input * input, axis=axes, keepdims=True) + eps)
    return out if weight is None else out * weight


def normalize(input: mx.array, p: float = 2.0, dim: int = 1, eps: float = 1e-12, out: None = None) -> mx.array:
    return input / mx.maximum(_vector_norm(input, p, _axes(dim, input.ndim), True), eps)


def cosine_similarity(x1: mx.array, x2: mx.array, dim: int = 1, eps: float = 1e-8) -> mx.array:
    shape = mx.broadcast_shapes(x1.shape, x2.shape)
    a, b = mx.broadcast_to(x1, shape), mx.broadcast_to(x2, shape)
    # as ATen: each input divided by its norm clamped at eps, then the dot product
    na = mx.maximum(mx.sqrt(mx.sum(a * a, axis=dim, keepdims=True)), eps)
    nb = mx.maximum(mx.sqrt(mx.sum(b * b, axis=dim, keepdims=True)), eps)
    return mx.sum((a / na) * (b / nb), axis=dim)


def pairwise_distance(x1: mx.array, x2: mx.array, p: float = 2.0, eps: float = 1e-6,
                      keepdim: bool = False) -> mx.array:
    diff = x1 - x2 + eps
    return _vector_norm(diff, p, [diff.ndim - 1] if diff.ndim else None, keepdim)


def _reduction(loss: mx.array, reduction: str) -> mx.array:
    if reduction == "none":
        return loss
    if reduction == "sum":
        return mx.sum(loss)
    if reduction == "mean":
        return mx.mean(loss)
    raise ValueError(f"{reduction} is not a valid value for reduction")


def _legacy_reduction(size_average: Any, reduce: Any, reduction: str) -> str:
    if size_average is None and reduce is None:
        return reduction
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    return "none" if not reduce else ("mean" if size_average else "sum")


def mse_loss(input: mx.array, target: mx.array, size_average: Any = None, reduce: Any = None,
             reduction: str = "mean", weight: Any = None) -> mx.array:
    loss = mx.square(input - target)
    loss = loss if weight is None else loss * weight
    return _reduction(loss, _legacy_reduction(size_average, reduce, reduction))


def l1_loss(input: mx.array, target: mx.array, size_average: Any = None, reduce: Any = None,
            reduction: str = "mean", weight: Any = None) -> mx.array:
    loss = mx.abs(input - target)
    loss = loss if weight is None else loss * weight
    return _reduction(loss, _legacy_reduction(size_average, reduce, reduction))


def _class_last(x: mx.array) -> mx.array:
    """(N, C, d1, ...) -> (N, d1, ..., C): torch puts the class dim at 1."""
    return x if x.ndim <= 2 else mx.moveaxis(x, 1, -1)


def nll_loss(input: mx.array, target: mx.array, weight: mx.array | None = None, size_average: Any = None,
             ignore_index: int = -100, reduce: Any = None, reduction: str = "mean") -> mx.array:
    reduction = _legacy_reduction(size_average, reduce, reduction)
    logp = _class_last(input)
    target = target.astype(mx.int64)
    valid = target != ignore_index
    safe = mx.where(valid, target, 0)
    picked = mx.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
    w = mx.ones(safe.shape, dtype=logp.dtype) if weight is None else weight[safe]
    w = mx.where(valid, w, 0)
    loss = -picked * w
    if reduction == "mean":  # torch: weighted mean over the targets that are not ignored
        return mx.sum(loss) / mx.sum(w)
    return _reduction(loss, reduction)


def cross_entropy(input: mx.array, target: mx.array, weight: mx.array | None = None, size_average: Any = None,
                  ignore_index: int = -100, reduce: Any = None, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> mx.array:
    reduction = _legacy_reduction(size_average, reduce, reduction)
    class_dim = 0 if input.ndim == 1 else 1
    logp = log_softmax(input, dim=class_dim)
    n_classes = input.shape[class_dim]
    if mx.issubdtype(target.dtype, mx.floating):  # class probabilities
        probs = target * (1 - label_smoothing) + label_smoothing / n_classes if label_smoothing else target
        terms = logp * probs
        if weight is not None:
            shape = [1] * input.ndim
            shape[class_dim] = n_classes
            terms = terms * weight.reshape(shape)
        loss = -mx.sum(terms, axis=class_dim)
        if reduction == "mean":
            return mx.sum(loss) / builtins.max(loss.size, 1)
        return _reduction(loss, reduction)
    squeeze = input.ndim == 1
    if squeeze:
        logp, target = logp[None], target[None]
    loss = nll_loss(logp, target, weight, ignore_index=ignore_index, reduction=reduction)
    if label_smoothing:
        if weight is not None:
            raise UnsupportedTorchOp("torch.nn.functional.cross_entropy(weight=..., label_smoothing=...)")
        valid = target != ignore_index
        smooth = mx.where(valid, -mx.sum(_class_last(logp), axis=-1), 0) / n_classes
        if reduction == "mean":
            smooth = mx.sum(smooth) / mx.sum(valid)
        elif reduction == "sum":
            smooth = mx.sum(smooth)
        loss = (1 - label_smoothing) * loss + label_smoothing * smooth
    return loss[0] if squeeze and reduction == "none" else loss


def kl_div(input: mx.array, target: mx.array, size_average: Any = None, reduce: Any = None,
           reduction: str = "mean", log_target: bool = False) -> mx.array:
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if log_target:
        loss = mx.exp(target) * (target - input)
    else:  # torch: xlogy(target, target) - target * input, with 0 * log 0 = 0
        loss = mx.where(target == 0, 0, target * mx.log(target)) - target * input
    if reduction == "batchmean":
        return mx.sum(loss) / (input.shape[0] if input.ndim else 1)
    return _reduction(loss, reduction)


def binary_cross_entropy_with_logits(input: mx.array, target: mx.array, weight: Any = None,
                                     size_average: Any = None, reduce: Any = None, reduction: str = "mean",
                                     pos_weight: Any = None) -> mx.array:
    log_sig, log_not_sig = logsigmoid(input), logsigmoid(-input)
    pos = log_sig if pos_weight is None else pos_weight * log_sig
    loss = -(target * pos + (1 - target) * log_not_sig)
    loss = loss if weight is None else loss * weight
    return _reduction(loss, _legacy_reduction(size_average, reduce, reduction))


def one_hot(tensor: mx.array, num_classes: int = -1) -> mx.array:
    if num_classes < 0:
        num_classes = int(mx.max(tensor).item()) + 1
    return (tensor[..., None] == mx.arange(num_classes)).astype(mx.int64)


def embedding(input: mx.array, weight: mx.array, padding_idx: Any = None, max_norm: Any = None,
              norm_type: float = 2.0, scale_grad_by_freq: bool = False, sparse: bool = False) -> mx.array:
    if max_norm is not None:
        raise UnsupportedTorchOp("torch.nn.functional.embedding(max_norm=...)")
    return weight[input]


def pad(input: mx.array, pad: Any, mode: str = "constant", value: float | None = None) -> mx.array:  # noqa: A002
    if mode != "constant":
        raise UnsupportedTorchOp(f"torch.nn.functional.pad(mode={mode!r})")
    if len(pad) % 2:
        raise ValueError("Padding length must be divisible by 2")
    widths = [(0, 0)] * input.ndim
    for i in range(len(pad) // 2):  # pairs start from the last dim
        widths[input.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    crop = tuple(slice(-lo if lo < 0 else None, hi if hi < 0 else None) for lo, hi in widths)  # negative pads
    grown = [(builtins.max(lo, 0), builtins.max(hi, 0)) for lo, hi in widths]
    return mx.pad(input[crop], grown, constant_values=0 if value is None else value)


# ----------------------------------------------------------------------------------------------
# shape and indexing

def cat(tensors: Iterable[mx.array], dim: int = 0, *, out: None = None) -> mx.array:
    tensors = [_arr(t) for t in tensors]
    parts = [t for t in tensors if not (t.ndim == 1 and t.shape[0] == 0)]  # torch skips legacy empties
    return mx.concatenate(parts or tensors[:1], axis=dim)


def stack(tensors: Iterable[mx.array], dim: int = 0, *, out: None = None) -> mx.array:
    return mx.stack([_arr(t) for t in tensors], axis=dim)


def hstack(tensors: Iterable[mx.array], *, out: None = None) -> mx.array:
    tensors = [mx.atleast_1d(t) for t in tensors]
    return mx.concatenate(tensors, axis=0 if tensors[0].ndim == 1 else 1)


def vstack(tensors: Iterable[mx.array], *, out: None = None) -> mx.array:
    return mx.concatenate([mx.atleast_2d(t) for t in tensors], axis=0)


def _pieces(x: mx.array, dim: int, sizes: list[int]) -> tuple:
    starts = np.cumsum([0] + sizes)
    return tuple(narrow(x, dim, int(s), int(k)) for s, k in zip(starts[:-1], sizes))


def split(tensor: mx.array, split_size_or_sections: Any, dim: int = 0) -> tuple:
    n = tensor.shape[dim]
    if isinstance(split_size_or_sections, int):
        size = split_size_or_sections
        sizes = [size] * (n // size) + ([n % size] if n % size else [])
    else:
        sizes = list(split_size_or_sections)
        if builtins.sum(sizes) != n:
            raise RuntimeError(f"split_with_sizes expects split_sizes to sum exactly to {n}, got {sizes}")
    return _pieces(tensor, dim, sizes)


def chunk(input: mx.array, chunks: int, dim: int = 0) -> tuple:
    return split(input, builtins.max(-(-input.shape[dim] // chunks), 1), dim)


def tensor_split(input: mx.array, indices_or_sections: Any, dim: int = 0) -> tuple:
    n = input.shape[dim]
    if isinstance(indices_or_sections, int):
        k = indices_or_sections
        sizes = [n // k + 1] * (n % k) + [n // k] * (k - n % k)
    else:
        bounds = [0] + [builtins.min(int(i), n) for i in indices_or_sections] + [n]
        sizes = [builtins.max(b - a, 0) for a, b in zip(bounds[:-1], bounds[1:])]
    return _pieces(input, dim, sizes)


def unbind(input: mx.array, dim: int = 0) -> tuple:
    return tuple(mx.take(input, i, axis=dim) for i in range(input.shape[dim]))


def narrow(input: mx.array, dim: int, start: int, length: int) -> mx.array:
    dim %= input.ndim
    n = input.shape[dim]
    if not -n <= start <= n:  # torch's checks and messages; a slice would clip silently
        raise IndexError(f"start out of range (expected to be in range of [{-n}, {n}], but got {start})")
    if start < 0:
        start += n
    if length < 0 or start + length > n:
        raise RuntimeError(f"start ({start}) + length ({length}) exceeds dimension size ({n}).")
    return input[(slice(None),) * dim + (slice(start, start + length),)]


def reshape(input: mx.array, *shape: Any) -> mx.array:
    return mx.reshape(input, _ints(shape))


def flatten(input: mx.array, start_dim: int = 0, end_dim: int = -1) -> mx.array:
    if input.ndim == 0:
        return input.reshape(1)
    return mx.flatten(input, start_axis=start_dim, end_axis=end_dim)


def unflatten(input: mx.array, dim: int, sizes: Any) -> mx.array:
    return mx.unflatten(input, dim, tuple(sizes))


def squeeze(input: mx.array, dim: Any = None) -> mx.array:
    if input.ndim == 0:
        return input
    if dim is None:
        return mx.squeeze(input)
    axes = [a for a in _axes(dim, input.ndim) or [] if input.shape[a] == 1]  # torch: a no-op on other sizes
    return mx.squeeze(input, axis=axes) if axes else input


def unsqueeze(input: mx.array, dim: int) -> mx.array:
    return mx.expand_dims(input, dim if dim >= 0 else dim + input.ndim + 1)


def transpose(input: mx.array, dim0: int, dim1: int) -> mx.array:
    return mx.swapaxes(input, dim0, dim1) if input.ndim else input


def t(input: mx.array) -> mx.array:
    if input.ndim > 2:
        raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is {input.ndim}D")
    return input.T


def permute(input: mx.array, *dims: Any) -> mx.array:
    return mx.transpose(input, [d % input.ndim for d in _ints(dims)])


def movedim(input: mx.array, source: Any, destination: Any) -> mx.array:
    src, dst = _axes(source, input.ndim) or [], _axes(destination, input.ndim) or []
    order = [d for d in range(input.ndim) if d not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return mx.transpose(input, order)


def expand(input: mx.array, *sizes: Any) -> mx.array:
    sizes = _ints(sizes)
    lead = len(sizes) - input.ndim
    shape = [input.shape[i - lead] if s == -1 else s for i, s in enumerate(sizes)]
    return mx.broadcast_to(input, shape)


def expand_as(input: mx.array, other: mx.array) -> mx.array:
    return mx.broadcast_to(input, other.shape)


def broadcast_to(input: mx.array, size: Any) -> mx.array:
    return expand(input, tuple(size))


def repeat(input: mx.array, *repeats: Any) -> mx.array:
    repeats = _ints(repeats)
    if len(repeats) < input.ndim:
        raise RuntimeError("Number of dimensions of repeat dims can not be smaller than number of "
                           "dimensions of tensor")
    return mx.tile(input, repeats)


def tile(input: mx.array, *dims: Any) -> mx.array:
    return mx.tile(input, _ints(dims))


def repeat_interleave(input: mx.array, repeats: Any, dim: int | None = None, *,
                      output_size: Any = None) -> mx.array:
    if isinstance(repeats, mx.array):
        if repeats.size != 1:
            raise UnsupportedTorchOp("torch.repeat_interleave with per-element repeats")
        repeats = int(repeats.item())
    if dim is None:
        return mx.repeat(input.reshape(-1), repeats, axis=0)
    return mx.repeat(input, repeats, axis=dim)


def flip(input: mx.array, *dims: Any) -> mx.array:
    axes = _axes(_ints(dims), input.ndim) or []
    return input[tuple(slice(None, None, -1) if a in axes else slice(None) for a in range(input.ndim))]


def roll(input: mx.array, shifts: Any, dims: Any = None) -> mx.array:
    if dims is None:
        return mx.roll(input.reshape(-1), shifts).reshape(input.shape)
    return mx.roll(input, shifts, axis=dims)


def tril(input: mx.array, diagonal: int = 0, *, out: None = None) -> mx.array:
    mask = mx.tri(input.shape[-2], input.shape[-1], k=diagonal, dtype=mx.bool_)
    return mx.where(mask, input, mx.zeros_like(input))


def triu(input: mx.array, diagonal: int = 0, *, out: None = None) -> mx.array:
    mask = mx.tri(input.shape[-2], input.shape[-1], k=diagonal - 1, dtype=mx.bool_)
    return mx.where(mask, mx.zeros_like(input), input)


def diagonal(input: mx.array, offset: int = 0, dim1: int = 0, dim2: int = 1) -> mx.array:
    return mx.diagonal(input, offset, dim1, dim2)


def index_select(input: mx.array, dim: int, index: mx.array, *, out: None = None) -> mx.array:
    return mx.take(input, index.reshape(-1), axis=dim)


def gather(input: mx.array, dim: int, index: mx.array, *, sparse_grad: bool = False,
           out: None = None) -> mx.array:
    dim %= input.ndim
    # torch lets index be smaller than input along the other dims: gather from that corner
    key = tuple(slice(None) if d == dim else slice(0, index.shape[d]) for d in range(input.ndim))
    return mx.take_along_axis(input[key], index, axis=dim)


def take_along_dim(input: mx.array, indices: mx.array, dim: int | None = None, *, out: None = None) -> mx.array:
    if dim is None:
        return mx.take_along_axis(input.reshape(-1), indices.reshape(-1), axis=0)
    return mx.take_along_axis(input, indices, axis=dim)


def scatter(input: mx.array, dim: int, index: mx.array, src: Any = None, *, value: Any = None,
            reduce: str | None = None) -> mx.array:
    if reduce is not None:
        raise UnsupportedTorchOp(f"torch.scatter(reduce={reduce!r})")
    src = _arr(value if src is None else src)
    src = src[tuple(slice(0, n) for n in index.shape)] if src.ndim else mx.broadcast_to(src, index.shape)
    return mx.put_along_axis(input, index, src.astype(input.dtype), axis=dim)


def scatter_add(input: mx.array, dim: int, index: mx.array, src: mx.array) -> mx.array:
    dim %= input.ndim
    idx = [mx.broadcast_to(mx.arange(n).reshape([-1 if i == d else 1 for i in range(index.ndim)]), index.shape)
           for d, n in enumerate(index.shape)]
    idx[dim] = index
    return input.at[tuple(idx)].add(src[tuple(slice(0, n) for n in index.shape)])


# ----------------------------------------------------------------------------------------------
# creation from a tensor, dtype and device conversion

def _like(fill: Callable) -> Callable:
    def op(input: mx.array, *args: Any, dtype: Any = None, **_: Any) -> mx.array:
        return fill(input.shape, *args, dtype=input.dtype if dtype is None else mx_dtype(dtype))

    return op


zeros_like = _like(lambda shape, dtype: mx.zeros(shape, dtype=dtype))
ones_like = _like(lambda shape, dtype: mx.ones(shape, dtype=dtype))
full_like = _like(lambda shape, value, dtype: mx.full(shape, value).astype(dtype))  # torch casts the value
rand_like = _like(lambda shape, dtype: mx.random.uniform(shape=shape, dtype=dtype))
randn_like = _like(lambda shape, dtype: mx.random.normal(shape, dtype=dtype))


def _new(fill: Callable) -> Callable:
    def method(self: mx.array, *size: Any, dtype: Any = None, **_: Any) -> mx.array:
        return fill(_ints(size), dtype=self.dtype if dtype is None else mx_dtype(dtype))

    return method


def new_full(self: mx.array, size: Any, fill_value: Any, *, dtype: Any = None, **_: Any) -> mx.array:
    return mx.full(tuple(size), fill_value, dtype=self.dtype if dtype is None else mx_dtype(dtype))


def new_tensor(self: mx.array, data: Any, *, dtype: Any = None, **_: Any) -> mx.array:
    return mx.array(to_mlx(data), dtype=self.dtype if dtype is None else mx_dtype(dtype))


def to(self: mx.array, *args: Any, dtype: Any = None, device: Any = None, **_: Any) -> mx.array:
    """``.to(dtype)``, ``.to(device)``, ``.to(device, dtype)``, ``.to(other)``: devices are ignored
    (MLX has unified memory)."""
    for arg in args:
        if isinstance(arg, mx.array):
            dtype = arg.dtype
        elif _is_device(arg):
            continue
        elif dtype is None:
            dtype = arg
        else:
            raise TypeError(f"to() received an invalid combination of arguments: {args}")
    return self if dtype is None else self.astype(mx_dtype(dtype))


_TENSOR_TYPES = {"torch.FloatTensor": mx.float32, "torch.HalfTensor": mx.float16, "torch.DoubleTensor": mx.float64,
                 "torch.LongTensor": mx.int64, "torch.IntTensor": mx.int32, "torch.BoolTensor": mx.bool_,
                 "torch.BFloat16Tensor": mx.bfloat16}


def type_(self: mx.array, dtype: Any = None, non_blocking: bool = False, **_: Any) -> Any:
    if dtype is None:
        raise UnsupportedTorchOp("torch.Tensor.type() without a dtype", "use .dtype")
    if isinstance(dtype, str):
        dtype = _TENSOR_TYPES.get(dtype.replace(".cuda", ""), dtype)
    return self.astype(mx_dtype(dtype))


def type_as(self: mx.array, other: mx.array) -> mx.array:
    return self.astype(other.dtype)


def _as(dtype: mx.Dtype) -> Callable:
    def method(self: mx.array, memory_format: Any = None) -> mx.array:
        return self.astype(dtype)

    return method


def _same(self: mx.array, *args: Any, **kwargs: Any) -> mx.array:
    """``.cpu()``, ``.cuda()``, ``.contiguous()``, ``.detach()``: the same MLX array."""
    return self


def clone(input: mx.array, *, memory_format: Any = None) -> mx.array:
    return mx.array(input)  # a new array: later edits of the original do not reach it


def _size(self: mx.array, dim: int | None = None) -> Any:
    return tuple(self.shape) if dim is None else self.shape[dim]


def _view(self: mx.array, *shape: Any) -> mx.array:
    if len(shape) == 1 and (isinstance(shape[0], mx.Dtype) or _is_torch_dtype(shape[0])):
        return self.view(mx_dtype(shape[0]))
    return reshape(self, *shape)


# ----------------------------------------------------------------------------------------------
# the registry: torch names -> implementations

_u, _b = _unary, _binary

# torch.<name>(input, ...) and Tensor.<name>(...) alike
_COMMON: dict[str, Callable] = {
    # elementwise unary
    "abs": _u(mx.abs), "absolute": _u(mx.abs), "neg": _u(mx.negative), "negative": _u(mx.negative),
    "exp": _u(mx.exp), "exp2": _u(lambda x: mx.power(2.0, x)), "expm1": _u(mx.expm1), "log": _u(mx.log),
    "log2": _u(mx.log2), "log10": _u(mx.log10), "log1p": _u(mx.log1p), "sqrt": _u(mx.sqrt),
    "rsqrt": _u(mx.rsqrt), "square": _u(mx.square), "reciprocal": _u(mx.reciprocal), "sin": _u(mx.sin),
    "cos": _u(mx.cos), "tan": _u(mx.tan), "sinh": _u(mx.sinh), "cosh": _u(mx.cosh), "tanh": _u(mx.tanh),
    "asin": _u(mx.arcsin), "acos": _u(mx.arccos), "atan": _u(mx.arctan), "arcsin": _u(mx.arcsin),
    "arccos": _u(mx.arccos), "arctan": _u(mx.arctan), "sigmoid": _u(mx.sigmoid), "erf": _u(mx.erf),
    "erfinv": _u(mx.erfinv), "floor": _u(mx.floor), "ceil": _u(mx.ceil), "trunc": _u(_trunc),
    "fix": _u(_trunc), "sign": sign, "sgn": sign, "round": round_, "isnan": _u(mx.isnan),
    "isinf": _u(mx.isinf), "isfinite": _u(mx.isfinite), "logical_not": _u(mx.logical_not),
    "bitwise_not": _u(mx.bitwise_invert), "relu": relu, "nan_to_num": nan_to_num,
    # elementwise binary
    "add": add, "sub": sub, "subtract": sub, "mul": _b(mx.multiply), "multiply": _b(mx.multiply),
    "div": div, "divide": div, "true_divide": _b(mx.divide), "floor_divide": _b(mx.floor_divide),
    "remainder": _b(mx.remainder), "fmod": fmod, "pow": pow,
    "maximum": _b(mx.maximum), "minimum": _b(mx.minimum), "fmax": _b(mx.maximum), "fmin": _b(mx.minimum),
    "atan2": _b(mx.arctan2), "arctan2": _b(mx.arctan2), "logaddexp": _b(mx.logaddexp),
    "eq": _b(mx.equal), "ne": _b(mx.not_equal), "not_equal": _b(mx.not_equal), "lt": _b(mx.less),
    "less": _b(mx.less), "le": _b(mx.less_equal), "less_equal": _b(mx.less_equal), "gt": _b(mx.greater),
    "greater": _b(mx.greater), "ge": _b(mx.greater_equal), "greater_equal": _b(mx.greater_equal),
    "logical_and": _b(mx.logical_and), "logical_or": _b(mx.logical_or),
    "logical_xor": _b(lambda a, b: mx.not_equal(_arr(a).astype(mx.bool_), _arr(b).astype(mx.bool_))),
    "bitwise_and": _b(mx.bitwise_and), "bitwise_or": _b(mx.bitwise_or), "bitwise_xor": _b(mx.bitwise_xor),
    "clamp": clamp, "clip": clamp, "clamp_min": lambda input, min: clamp(input, min=min),  # noqa: A006
    "clamp_max": lambda input, max: clamp(input, max=max),  # noqa: A006
    "where": where, "nonzero": nonzero, "masked_fill": masked_fill, "lerp": lerp, "isclose": isclose,
    # activations
    "softmax": softmax, "log_softmax": log_softmax,
    # reductions
    "sum": sum, "prod": prod, "mean": mean, "var": var, "std": std, "logsumexp": logsumexp, "amax": amax,
    "amin": amin, "max": max, "min": min,
    "argmax": argmax, "argmin": argmin, "all": all, "any": any, "count_nonzero": count_nonzero,
    "norm": norm, "sort": sort, "argsort": argsort, "topk": topk, "median": median, "cumsum": cumsum,
    "cumprod": cumprod,
    # products
    "matmul": matmul, "mm": matmul, "bmm": matmul, "dot": dot, "inner": dot, "outer": outer, "ger": outer,
    "baddbmm": baddbmm,
    # shape and indexing
    "reshape": reshape, "flatten": flatten, "unflatten": unflatten, "squeeze": squeeze,
    "unsqueeze": unsqueeze, "transpose": transpose, "swapaxes": transpose, "swapdims": transpose, "t": t,
    "permute": permute, "movedim": movedim, "moveaxis": movedim, "broadcast_to": broadcast_to,
    "tile": tile, "repeat_interleave": repeat_interleave, "flip": flip, "roll": roll, "tril": tril,
    "triu": triu, "diagonal": diagonal, "narrow": narrow, "index_select": index_select, "gather": gather,
    "take_along_dim": take_along_dim, "scatter": scatter, "scatter_add": scatter_add, "split": split,
    "chunk": chunk, "tensor_split": tensor_split, "unbind": unbind, "clone": clone, "detach": _same,
}

_FUNCTION_ONLY: dict[str, Callable] = {  # torch.<name> only
    "rsub": rsub, "var_mean": var_mean, "std_mean": std_mean, "cat": cat, "concat": cat, "concatenate": cat,
    "stack": stack, "hstack": hstack, "vstack": vstack,
    "einsum": einsum, "zeros_like": zeros_like, "ones_like": ones_like, "full_like": full_like,
    "empty_like": zeros_like, "rand_like": rand_like, "randn_like": randn_like,
    # torch.* spellings of nn.functional ops
    "layer_norm": layer_norm, "rms_norm": rms_norm, "cosine_similarity": cosine_similarity,
    "pairwise_distance": pairwise_distance, "dropout": dropout,
}

_FUNCTIONAL: dict[str, Callable] = {  # torch.nn.functional.<name>
    "softmax": softmax, "log_softmax": log_softmax, "gelu": gelu, "relu": relu, "silu": silu,
    "sigmoid": _u(mx.sigmoid), "tanh": _u(mx.tanh), "softplus": softplus, "leaky_relu": leaky_relu,
    "elu": elu, "glu": glu, "logsigmoid": logsigmoid, "dropout": dropout, "layer_norm": layer_norm,
    "rms_norm": rms_norm, "normalize": normalize, "cosine_similarity": cosine_similarity,
    "pairwise_distance": pairwise_distance, "linear": linear, "cross_entropy": cross_entropy,
    "nll_loss": nll_loss, "kl_div": kl_div, "mse_loss": mse_loss, "l1_loss": l1_loss,
    "binary_cross_entropy_with_logits": binary_cross_entropy_with_logits, "one_hot": one_hot,
    "embedding": embedding, "pad": pad,
}

_LINALG: dict[str, Callable] = {"vector_norm": vector_norm, "norm": linalg_norm, "matmul": matmul}
_SPECIAL: dict[str, Callable] = {"erf": _u(mx.erf), "erfinv": _u(mx.erfinv), "expit": _u(mx.sigmoid),
                                 "logsumexp": logsumexp, "softmax": softmax, "log_softmax": log_softmax}

_METHOD_ONLY: dict[str, Callable] = {  # Tensor.<name> only (self first)
    "view": _view, "expand": expand, "expand_as": expand_as, "repeat": repeat, "contiguous": _same,
    "cpu": _same, "cuda": _same, "to": to, "type": type_, "type_as": type_as,
    "float": _as(mx.float32), "half": _as(mx.float16), "bfloat16": _as(mx.bfloat16),
    "double": _as(mx.float64), "int": _as(mx.int32), "long": _as(mx.int64), "short": _as(mx.int16),
    "char": _as(mx.int8), "byte": _as(mx.uint8), "bool": _as(mx.bool_),
    "new_zeros": _new(mx.zeros), "new_ones": _new(mx.ones), "new_empty": _new(mx.zeros),
    "new_full": new_full, "new_tensor": new_tensor,
    "size": _size, "dim": lambda self: self.ndim, "ndimension": lambda self: self.ndim,
    "numel": lambda self: self.size, "nelement": lambda self: self.size,
    "element_size": lambda self: self.itemsize, "item": lambda self: self.item(),
    "requires_grad_": _same, "retain_grad": lambda self: None,
    "where": lambda self, condition, other: mx.where(condition, self, other),  # self where condition
    # Python operators reaching __torch_function__ as Tensor.__add__ & co.
    "__add__": add, "__radd__": _reflected(mx.add), "__sub__": sub, "__rsub__": _reflected(mx.subtract),
    "__mul__": _b(mx.multiply), "__rmul__": _reflected(mx.multiply), "__truediv__": _b(mx.divide),
    "__rtruediv__": _reflected(mx.divide), "__floordiv__": _b(mx.floor_divide),
    "__rfloordiv__": _reflected(mx.floor_divide), "__mod__": _b(mx.remainder), "__pow__": pow,
    "__rpow__": _reflected(mx.power), "__matmul__": matmul, "__rmatmul__": _reflected(matmul),
    "__neg__": _u(mx.negative), "__abs__": _u(mx.abs), "__eq__": _b(mx.equal), "__ne__": _b(mx.not_equal),
    "__lt__": _b(mx.less), "__le__": _b(mx.less_equal), "__gt__": _b(mx.greater),
    "__ge__": _b(mx.greater_equal), "__and__": _b(mx.logical_and), "__or__": _b(mx.logical_or),
    "__invert__": _u(mx.logical_not), "__getitem__": lambda self, key: self[key],
}

_METHODS: dict[str, Callable] = {**_COMMON, **_METHOD_ONLY, "sigmoid": _u(mx.sigmoid), "tanh": _u(mx.tanh)}

_NAMESPACES = {  # public torch path -> the names translated there
    "torch": {**_COMMON, **_FUNCTION_ONLY},
    "torch.nn.functional": _FUNCTIONAL,
    "torch.linalg": _LINALG,
    "torch.special": _SPECIAL,
}


def supported_ops() -> dict[str, list[str]]:
    """The translated torch names: ``{"functions": ["torch.cat", ...], "methods": ["torch.Tensor.max", ...]}``."""
    functions = sorted(f"{ns}.{name}" for ns, names in _NAMESPACES.items() for name in names)
    methods = sorted(f"torch.Tensor.{name}" for name in _METHODS)
    return {"functions": functions, "methods": methods}


# ----------------------------------------------------------------------------------------------
# recognising torch callables

_Entry = tuple  # (torch object, public name, implementation, is a Tensor method)
_registry_cache: dict[int, _Entry] | None = None


def _registry() -> dict[int, _Entry]:
    """id(torch callable) -> entry; built once, on first need (torch is imported by then)."""
    global _registry_cache
    if _registry_cache is None:
        import torch

        table: dict[int, _Entry] = {}
        for ns, names in _NAMESPACES.items():
            module = torch
            for part in ns.split(".")[1:]:
                module = getattr(module, part)
            for name, impl in names.items():
                obj = getattr(module, name, None)
                if obj is not None and id(obj) not in table:
                    table[id(obj)] = (obj, f"{ns}.{name}", impl, False)
        for name, impl in _METHODS.items():
            obj = getattr(torch.Tensor, name, None)
            if obj is not None:
                table[id(obj)] = (obj, f"torch.Tensor.{name}", impl, True)
        _registry_cache = table
    return _registry_cache


def _entry(func: Any) -> _Entry | None:
    if _torch() is None:
        return None
    entry = _registry().get(id(func))
    return entry if entry is not None and entry[0] is func else None


_PRIVATE_MODULES = {"torch._C._nn": ("torch.nn.functional", ""), "torch._C._fft": ("torch.fft", "fft_"),
                    "torch._C._linalg": ("torch.linalg", "linalg_"),
                    "torch._C._special": ("torch.special", "special_"), "torch.functional": ("torch", "")}


def describe(func: Any) -> str:
    """The public torch name of ``func`` (``torch.softmax``, ``torch.Tensor.max``, ``torch.fft.fft``);
    a string is a tensor method name."""
    if isinstance(func, str):
        return func if func.startswith("torch") else f"torch.Tensor.{func}"
    entry = _entry(func)
    if entry is not None:
        return entry[1]
    name = getattr(func, "__name__", None) or repr(func)
    qualname = getattr(func, "__qualname__", "") or ""
    objclass = getattr(func, "__objclass__", None)
    if qualname.startswith(("Tensor.", "TensorBase.")) or getattr(objclass, "__name__", "") == "TensorBase":
        return f"torch.Tensor.{name}"
    if qualname.startswith("_VariableFunctionsClass."):
        return f"torch.{name}"
    module = getattr(func, "__module__", None) or ""
    public, prefix = _PRIVATE_MODULES.get(module, (module, ""))
    return f"{public}.{name.removeprefix(prefix)}" if public else name


def is_supported(func_or_name: Any) -> bool:
    """Whether a torch callable (or a tensor method name) runs on MLX arrays here. Cheap for names."""
    if isinstance(func_or_name, str):
        return func_or_name in _METHODS
    return _entry(func_or_name) is not None


def _prepare_kwargs(op: str, kwargs: dict | None) -> dict:
    kwargs = {k: v for k, v in (kwargs or {}).items() if k not in _IGNORED_KWARGS}
    if "axis" in kwargs and "dim" not in kwargs:  # torch accepts numpy's spelling
        kwargs["dim"] = kwargs.pop("axis")
    if kwargs.get("out") is not None:
        raise UnsupportedTorchOp(f"{op}(out=...)", "assign the result instead")
    return to_mlx(kwargs)


def translate_function(func: Any, args: tuple = (), kwargs: dict | None = None) -> Callable[[], Any]:
    """A thunk running ``func(*args, **kwargs)`` on MLX arrays (raises now if ``func`` is unsupported)."""
    entry = _entry(func)
    if entry is None:
        raise UnsupportedTorchOp(describe(func))
    _, name, impl, is_method = entry
    kwargs = _prepare_kwargs(name, kwargs)
    args = to_mlx(tuple(args))
    if is_method:  # torch.Tensor.softmax(x, ...): self first
        if not args:
            raise TypeError(f"{name} needs a tensor")
        args = (_arr(args[0]), *args[1:])
    return lambda: impl(*args, **kwargs)


def call_torch_function(func: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
    """``func(*args, **kwargs)`` (``torch.softmax``, ``F.gelu``, ``torch.Tensor.max``...) on MLX arrays with
    torch's semantics; tuple results keep torch's order (``.values``/``.indices`` where torch has them)."""
    return translate_function(func, args, kwargs)()


def call_tensor_method(name: str, self_array: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
    """``self_array.<name>(*args, **kwargs)`` with torch's meaning (``p.softmax(dim=-1)``, ``h.max(1)``)."""
    impl = _METHODS.get(name)
    if impl is None:
        raise UnsupportedTorchOp(f"torch.Tensor.{name}")
    kwargs = _prepare_kwargs(f"torch.Tensor.{name}", kwargs)
    return impl(_arr(self_array), *to_mlx(tuple(args)), **kwargs)
