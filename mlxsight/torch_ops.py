"""torch operations, run on MLX arrays with torch's semantics.

nnsight scripts call torch inside traces (``torch.softmax(h, dim=-1)``, ``h.norm(dim=-1)``,
``logits.max(1)``). Proxies record such calls (``__torch_function__``, torch-named methods) and,
when the graph runs, this module computes them on MLX arrays, matching torch: ``dim``/``keepdim``
keywords, ``(values, indices)`` results, unbiased variance, exact GELU, and so on. A call that is
not translated raises ``UnsupportedTorchOp`` naming it; nothing is guessed.
"""

from __future__ import annotations

import math
from collections import namedtuple
from typing import Any, Callable

import mlx.core as mx

ValuesIndices = namedtuple("ValuesIndices", ["values", "indices"])  # torch.return_types.{max,topk,...}


class UnsupportedTorchOp(NotImplementedError):
    """A torch call that mlxsight does not translate to MLX."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name} is not translated to MLX by mlxsight; use mlxsight.apply(fn, ...) with an "
                         f"mlx.core function instead")


# -- conversions ------------------------------------------------------------------------------

_DTYPES = {
    "float32": mx.float32, "float": mx.float32, "float16": mx.float16, "half": mx.float16,
    "bfloat16": mx.bfloat16, "float64": mx.float32, "double": mx.float32, "int64": mx.int64,
    "long": mx.int64, "int32": mx.int32, "int": mx.int32, "int16": mx.int16, "int8": mx.int8,
    "uint8": mx.uint8, "bool": mx.bool_, "complex64": mx.complex64,
}


def mlx_dtype(dtype: Any) -> mx.Dtype | None:
    """torch (or string, or MLX) dtype -> MLX dtype. float64 maps to float32 (MLX GPU has none)."""
    if dtype is None or isinstance(dtype, mx.Dtype):
        return dtype
    name = str(dtype).replace("torch.", "")
    if name not in _DTYPES:
        raise UnsupportedTorchOp(f"dtype {dtype}")
    return _DTYPES[name]


def to_mlx(value: Any) -> Any:
    """torch tensors, dtypes and sizes inside ``value`` (at any depth) as their MLX counterparts."""
    if isinstance(value, (tuple, list)):
        converted = [to_mlx(v) for v in value]
        return type(value)(converted) if not _is_torch_size(value) else tuple(converted)
    if isinstance(value, dict):
        return {k: to_mlx(v) for k, v in value.items()}
    module = type(value).__module__ or ""
    if not module.startswith("torch"):
        return value
    import torch

    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        if t.dtype == torch.bfloat16:
            return mx.array(t.float().numpy()).astype(mx.bfloat16)
        return mx.array(t.numpy())
    if isinstance(value, torch.dtype):
        return mlx_dtype(value)
    if isinstance(value, torch.device):
        return None
    return value


def _is_torch_size(value: Any) -> bool:
    return type(value).__name__ == "Size" and (type(value).__module__ or "").startswith("torch")


def describe(func: Any) -> str:
    """``torch.softmax``, ``torch.nn.functional.gelu``, ``torch.Tensor.norm``..."""
    if isinstance(func, str):
        return f"torch.Tensor.{func}"
    name = getattr(func, "__name__", repr(func))
    qualname = getattr(func, "__qualname__", name) or name
    module = getattr(func, "__module__", None) or ""
    if qualname.startswith(("Tensor.", "TensorBase.", "_TensorBase.")):
        return f"torch.Tensor.{name}"
    if "functional" in module or module == "torch._C._nn":
        return f"torch.nn.functional.{name}"
    if name.startswith("linalg_"):
        return f"torch.linalg.{name[len('linalg_'):]}"
    return f"torch.{name}"


# -- helpers -----------------------------------------------------------------------------------

def _arr(x: Any) -> mx.array:
    return x if isinstance(x, mx.array) else mx.array(x)


def _index(x: mx.array) -> mx.array:
    return x.astype(mx.int64)  # torch's index dtype (MLX gives uint32)


def _axis(dim: Any) -> Any:
    if isinstance(dim, list):
        return tuple(dim)
    return dim


def _shape(args: tuple) -> tuple:
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        return tuple(args[0])
    return tuple(args)


def _reduce(fn: Callable) -> Callable:
    def op(x, dim=None, keepdim=False, *, dtype=None, axis=None):
        dim = axis if dim is None else dim
        x = _arr(x)
        if dtype is not None:
            x = x.astype(mlx_dtype(dtype))
        return fn(x, axis=_axis(dim), keepdims=keepdim)
    return op


def _values_indices(fn_val: Callable, fn_idx: Callable) -> Callable:
    """torch.max/min: no dim -> a scalar; a dim -> (values, indices); a tensor -> elementwise."""
    def op(x, dim=None, keepdim=False, *, other=None, axis=None):
        dim = axis if dim is None else dim
        x = _arr(x)
        if isinstance(dim, mx.array) or other is not None:
            return (mx.maximum if fn_val is mx.max else mx.minimum)(x, _arr(other if other is not None else dim))
        if dim is None:
            return fn_val(x)
        return ValuesIndices(fn_val(x, axis=dim, keepdims=keepdim), _index(fn_idx(x, axis=dim, keepdims=keepdim)))
    return op


def _var(x, dim=None, unbiased=None, keepdim=False, *, correction=None, axis=None):
    dim = axis if dim is None else dim
    if isinstance(dim, bool):  # torch.var(x, unbiased) positional form
        dim, unbiased = None, dim
    ddof = correction if correction is not None else (0 if unbiased is False else 1)
    return mx.var(_arr(x), axis=_axis(dim), keepdims=keepdim, ddof=int(ddof))


def _std(*args, **kwargs):
    return mx.sqrt(_var(*args, **kwargs))


def _norm(x, p="fro", dim=None, keepdim=False, dtype=None, *, ord=None):
    x = _arr(x)
    p = ord if ord is not None else p
    if p in ("fro", None) or p == 2:
        return mx.sqrt(mx.sum(mx.square(mx.abs(x)), axis=_axis(dim), keepdims=keepdim))
    if p == float("inf"):
        return mx.max(mx.abs(x), axis=_axis(dim), keepdims=keepdim)
    if p == float("-inf"):
        return mx.min(mx.abs(x), axis=_axis(dim), keepdims=keepdim)
    if p == 0:
        return mx.sum(x != 0, axis=_axis(dim), keepdims=keepdim).astype(x.dtype)
    if p == "nuc" or isinstance(p, str):
        raise UnsupportedTorchOp(f"torch.norm(p={p!r})")
    return mx.power(mx.sum(mx.power(mx.abs(x), p), axis=_axis(dim), keepdims=keepdim), 1.0 / p)


def _softmax(fn: Callable) -> Callable:
    def op(x, dim=None, _stacklevel=3, dtype=None):
        x = _arr(x)
        if dtype is not None:
            x = x.astype(mlx_dtype(dtype))
        if dim is None:
            dim = 0 if x.ndim in (0, 1, 3) else 1  # torch's legacy implicit dim
        return fn(x, axis=dim)
    return op


def _log_softmax(x, axis):
    return x - mx.logsumexp(x, axis=axis, keepdims=True)


def _gelu(x, approximate="none"):
    x = _arr(x)
    if approximate == "tanh":
        return 0.5 * x * (1 + mx.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return x * 0.5 * (1 + mx.erf(x / math.sqrt(2)))


def _topk(x, k, dim=-1, largest=True, sorted=True):
    x = _arr(x)
    order = mx.argsort(-x if largest else x, axis=dim)
    idx = mx.take(order, mx.arange(k), axis=dim)
    return ValuesIndices(mx.take_along_axis(x, idx, axis=dim), _index(idx))


def _sort(x, dim=-1, descending=False, stable=False):
    x = _arr(x)
    idx = mx.argsort(-x if descending else x, axis=dim)
    return ValuesIndices(mx.take_along_axis(x, idx, axis=dim), _index(idx))


def _argsort(x, dim=-1, descending=False, stable=False):
    x = _arr(x)
    return _index(mx.argsort(-x if descending else x, axis=dim))


def _arg(fn: Callable) -> Callable:
    def op(x, dim=None, keepdim=False):
        x = _arr(x)
        if dim is None:
            return _index(fn(x.reshape(-1)))
        return _index(fn(x, axis=dim, keepdims=keepdim))
    return op


def _cat(tensors, dim=0, *, axis=None):
    return mx.concatenate([_arr(t) for t in tensors], axis=axis if axis is not None else dim)


def _stack(tensors, dim=0):
    return mx.stack([_arr(t) for t in tensors], axis=dim)


def _unsqueeze(x, dim):
    x = _arr(x)
    return mx.expand_dims(x, dim if dim >= 0 else x.ndim + 1 + dim)


def _squeeze(x, dim=None):
    x = _arr(x)
    if dim is None:
        return mx.squeeze(x)
    dims = dim if isinstance(dim, (tuple, list)) else (dim,)
    dims = tuple(d for d in dims if x.shape[d] == 1)  # torch ignores dims that are not 1
    return mx.squeeze(x, axis=dims) if dims else x


def _permute(x, *dims):
    return mx.transpose(_arr(x), _shape(dims))


def _transpose(x, dim0, dim1):
    return mx.swapaxes(_arr(x), dim0, dim1)


def _flatten(x, start_dim=0, end_dim=-1):
    return mx.flatten(_arr(x), start_axis=start_dim, end_axis=end_dim)


def _expand(x, *sizes):
    x = _arr(x)
    sizes = _shape(sizes)
    lead = len(sizes) - x.ndim
    target = tuple(x.shape[i - lead] if s == -1 else s for i, s in enumerate(sizes))
    return mx.broadcast_to(x, target)


def _repeat(x, *sizes):
    return mx.tile(_arr(x), _shape(sizes))


def _to(x, *args, **kwargs):
    x = _arr(x)
    dtype = kwargs.get("dtype")
    for a in args:
        if isinstance(a, mx.Dtype) or (a is not None and not isinstance(a, (str, mx.array)) and "dtype" in type(a).__name__.lower()):
            dtype = a
        elif isinstance(a, mx.array):
            dtype = a.dtype
        elif isinstance(a, str) and a.replace("torch.", "") in _DTYPES:
            dtype = a
    return x.astype(mlx_dtype(dtype)) if dtype is not None else x


def _cast(dtype: mx.Dtype) -> Callable:
    return lambda x, *args, **kwargs: _arr(x).astype(dtype)


def _masked_fill(x, mask, value):
    x = _arr(x)
    return mx.where(_arr(mask).astype(mx.bool_), mx.array(value, dtype=x.dtype), x)


def _gather(x, dim, index, *, sparse_grad=False):
    return mx.take_along_axis(_arr(x), _arr(index), axis=dim)


def _index_select(x, dim, index):
    return mx.take(_arr(x), _arr(index), axis=dim)


def _narrow(x, dim, start, length):
    x = _arr(x)
    key = [slice(None)] * x.ndim
    key[dim] = slice(start, start + length)
    return x[tuple(key)]


def _clamp(x, min=None, max=None):
    return mx.clip(_arr(x), min, max)


def _where(condition, input=None, other=None):
    if input is None:
        raise UnsupportedTorchOp("torch.where(condition) (data-dependent shape)")
    return mx.where(_arr(condition).astype(mx.bool_), input, other)


def _binary(fn: Callable) -> Callable:
    def op(x, other, *, alpha=None, out=None):
        return fn(x, other * alpha if alpha is not None else other)
    return op


def _reflected(fn: Callable) -> Callable:
    return lambda x, other: fn(other, x)


def _div(x, other, *, rounding_mode=None):
    q = mx.divide(x, other)
    if rounding_mode == "floor":
        return mx.floor(q)
    if rounding_mode == "trunc":
        return mx.where(q < 0, mx.ceil(q), mx.floor(q))
    return q


def _cosine_similarity(x1, x2, dim=1, eps=1e-8):
    x1, x2 = _arr(x1), _arr(x2)
    num = mx.sum(x1 * x2, axis=dim)
    den = mx.maximum(mx.sqrt(mx.sum(x1 * x1, axis=dim)) * mx.sqrt(mx.sum(x2 * x2, axis=dim)), eps)
    return num / den


def _normalize(x, p=2.0, dim=1, eps=1e-12):
    x = _arr(x)
    return x / mx.maximum(_norm(x, p, dim, keepdim=True), eps)


def _layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    x = _arr(x)
    axes = tuple(range(-len(tuple(normalized_shape) if not isinstance(normalized_shape, int) else (1,)), 0))
    mean = mx.mean(x, axis=axes, keepdims=True)
    var = mx.var(x, axis=axes, keepdims=True)
    y = (x - mean) * mx.rsqrt(var + eps)
    return y * weight + bias if bias is not None else (y * weight if weight is not None else y)


def _linear(x, weight, bias=None):
    y = _arr(x) @ _arr(weight).T
    return y + bias if bias is not None else y


def _reduction(values: mx.array, reduction: str) -> mx.array:
    if reduction == "mean":
        return mx.mean(values)
    if reduction == "sum":
        return mx.sum(values)
    return values


def _cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    if weight is not None or label_smoothing:
        raise UnsupportedTorchOp("torch.nn.functional.cross_entropy(weight=/label_smoothing=)")
    logits, target = _arr(input), _arr(target)
    if logits.ndim > 2:  # [N, C, d1...] -> class axis last
        logits = mx.moveaxis(logits, 1, -1)
    logprobs = _log_softmax(logits, -1)
    keep = target != ignore_index
    picked = mx.take_along_axis(logprobs, mx.where(keep, target, 0)[..., None], axis=-1)[..., 0]
    losses = -picked * keep
    if reduction == "mean":
        return mx.sum(losses) / mx.sum(keep)
    return _reduction(losses, reduction)


def _kl_div(input, target, size_average=None, reduce=None, reduction="mean", log_target=False):
    input, target = _arr(input), _arr(target)
    pointwise = mx.exp(target) * (target - input) if log_target else mx.where(
        target > 0, target * (mx.log(mx.where(target > 0, target, 1)) - input), 0)
    if reduction == "batchmean":
        return mx.sum(pointwise) / input.shape[0]
    return _reduction(pointwise, reduction)


def _mse_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    return _reduction(mx.square(_arr(input) - _arr(target)), reduction)


def _pad(x, pad, mode="constant", value=0.0):
    if mode != "constant":
        raise UnsupportedTorchOp(f"torch.nn.functional.pad(mode={mode!r})")
    x = _arr(x)
    widths = [(0, 0)] * x.ndim
    for i in range(len(pad) // 2):
        widths[x.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    return mx.pad(x, widths, constant_values=value)


def _einsum(equation, *operands):
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    return mx.einsum(equation, *[_arr(o) for o in operands])


def _split(x, split_size_or_sections, dim=0):
    x = _arr(x)
    n = x.shape[dim]
    if isinstance(split_size_or_sections, int):
        points = list(range(split_size_or_sections, n, split_size_or_sections))
    else:
        points = list(mx.cumsum(mx.array(split_size_or_sections))[:-1].tolist())
    return tuple(mx.split(x, points, axis=dim))


def _chunk(x, chunks, dim=0):
    n = _arr(x).shape[dim]
    return _split(x, math.ceil(n / chunks), dim)


def _full_like(x, fill_value, dtype=None, **_):
    x = _arr(x)
    return mx.full(x.shape, fill_value, dtype=mlx_dtype(dtype) or x.dtype)


def _like(value: float) -> Callable:
    return lambda x, dtype=None, **_: _full_like(x, value, dtype)


def _tri(fn: Callable) -> Callable:
    return lambda x, diagonal=0: fn(_arr(x), k=diagonal)


def _cumsum(x, dim, dtype=None):
    x = _arr(x)
    return mx.cumsum(x.astype(mlx_dtype(dtype)) if dtype is not None else x, axis=dim)


def _flip(x, dims):
    x = _arr(x)
    dims = (dims,) if isinstance(dims, int) else dims
    key = [slice(None)] * x.ndim
    for d in dims:
        key[d] = slice(None, None, -1)
    return x[tuple(key)]


def _roll(x, shifts, dims=None):
    return mx.roll(_arr(x), shifts, axis=dims)


def _type_as(x, other):
    return _arr(x).astype(_arr(other).dtype)


def _new(value: float) -> Callable:
    def op(x, *size, dtype=None, **_):
        x = _arr(x)
        return mx.full(_shape(size), value, dtype=mlx_dtype(dtype) or x.dtype)
    return op


def _identity(x, *args, **kwargs):
    return x


def _getitem(x, key):
    return _arr(x)[to_mlx(key)]


def _dropout(x, p=0.5, training=True, inplace=False):
    if training and p > 0:
        raise UnsupportedTorchOp("torch.nn.functional.dropout(training=True) (random; pass training=False)")
    return x


# -- the table ---------------------------------------------------------------------------------
# Keyed by torch's ``__name__``: the same name means the same thing in ``torch``,
# ``torch.nn.functional`` and ``torch.Tensor`` (the few exceptions are handled in the functions).

OPS: dict[str, Callable] = {
    # reductions
    "sum": _reduce(mx.sum), "mean": _reduce(mx.mean), "prod": _reduce(mx.prod),
    "amax": _reduce(mx.max), "amin": _reduce(mx.min), "logsumexp": _reduce(mx.logsumexp),
    "all": _reduce(mx.all), "any": _reduce(mx.any),
    "max": _values_indices(mx.max, mx.argmax), "min": _values_indices(mx.min, mx.argmin),
    "argmax": _arg(mx.argmax), "argmin": _arg(mx.argmin), "var": _var, "std": _std,
    "norm": _norm, "linalg_vector_norm": lambda x, ord=2, dim=None, keepdim=False, dtype=None: _norm(x, ord, dim, keepdim),
    "topk": _topk, "sort": _sort, "argsort": _argsort, "cumsum": _cumsum,
    # activations and elementwise
    "softmax": _softmax(mx.softmax), "log_softmax": _softmax(_log_softmax),
    "relu": lambda x, inplace=False: mx.maximum(_arr(x), 0), "gelu": _gelu,
    "silu": lambda x, inplace=False: _arr(x) * mx.sigmoid(_arr(x)), "sigmoid": lambda x: mx.sigmoid(_arr(x)),
    "tanh": lambda x: mx.tanh(_arr(x)), "exp": lambda x: mx.exp(_arr(x)), "log": lambda x: mx.log(_arr(x)),
    "log1p": lambda x: mx.log1p(_arr(x)), "sqrt": lambda x: mx.sqrt(_arr(x)), "rsqrt": lambda x: mx.rsqrt(_arr(x)),
    "abs": lambda x: mx.abs(_arr(x)), "neg": lambda x: -_arr(x), "sign": lambda x: mx.sign(_arr(x)),
    "square": lambda x: mx.square(_arr(x)), "reciprocal": lambda x: mx.reciprocal(_arr(x)),
    "sin": lambda x: mx.sin(_arr(x)), "cos": lambda x: mx.cos(_arr(x)), "floor": lambda x: mx.floor(_arr(x)),
    "ceil": lambda x: mx.ceil(_arr(x)), "round": lambda x, decimals=0: mx.round(_arr(x), decimals),
    "clamp": _clamp, "clip": _clamp, "isnan": lambda x: mx.isnan(_arr(x)), "isinf": lambda x: mx.isinf(_arr(x)),
    "logical_not": lambda x: mx.logical_not(_arr(x)),
    # binary
    "add": _binary(mx.add), "sub": _binary(mx.subtract), "subtract": _binary(mx.subtract),
    "mul": _binary(mx.multiply), "multiply": _binary(mx.multiply), "div": _div, "divide": _div,
    "true_divide": _div, "pow": lambda x, exponent: mx.power(x, exponent), "matmul": lambda x, y: mx.matmul(x, y),
    "mm": lambda x, y: mx.matmul(x, y), "bmm": lambda x, y: mx.matmul(x, y),
    "maximum": lambda x, y: mx.maximum(x, y), "minimum": lambda x, y: mx.minimum(x, y),
    "eq": lambda x, y: mx.equal(x, y), "ne": lambda x, y: mx.not_equal(x, y), "gt": lambda x, y: mx.greater(x, y),
    "lt": lambda x, y: mx.less(x, y), "ge": lambda x, y: mx.greater_equal(x, y),
    "le": lambda x, y: mx.less_equal(x, y), "logical_and": lambda x, y: mx.logical_and(x, y),
    "logical_or": lambda x, y: mx.logical_or(x, y), "where": _where, "einsum": _einsum,
    "outer": lambda x, y: mx.outer(x, y), "dot": lambda x, y: mx.sum(x * y),
    # shapes and copies
    "cat": _cat, "concat": _cat, "concatenate": _cat, "stack": _stack, "split": _split, "chunk": _chunk,
    "reshape": lambda x, *shape: mx.reshape(_arr(x), _shape(shape)),
    "view": lambda x, *shape: mx.reshape(_arr(x), _shape(shape)),
    "unsqueeze": _unsqueeze, "squeeze": _squeeze, "permute": _permute, "transpose": _transpose,
    "t": lambda x: _arr(x).T, "flatten": _flatten, "expand": _expand, "repeat": _repeat,
    "narrow": _narrow, "flip": _flip, "roll": _roll, "tril": _tri(mx.tril), "triu": _tri(mx.triu),
    "gather": _gather, "index_select": _index_select, "masked_fill": _masked_fill,
    "contiguous": _identity, "clone": lambda x, memory_format=None: mx.array(_arr(x)), "detach": _identity,
    "cpu": _identity, "cuda": _identity, "to": _to, "type_as": _type_as,
    "float": _cast(mx.float32), "half": _cast(mx.float16), "bfloat16": _cast(mx.bfloat16),
    "double": _cast(mx.float32), "long": _cast(mx.int64), "int": _cast(mx.int32), "bool": _cast(mx.bool_),
    "requires_grad_": _identity, "retain_grad": _identity,
    "zeros_like": _like(0.0), "ones_like": _like(1.0), "full_like": _full_like, "empty_like": _like(0.0),
    "new_zeros": _new(0.0), "new_ones": _new(1.0), "new_empty": _new(0.0),
    # torch.nn.functional
    "cosine_similarity": _cosine_similarity, "normalize": _normalize, "layer_norm": _layer_norm,
    "linear": _linear, "cross_entropy": _cross_entropy, "kl_div": _kl_div, "mse_loss": _mse_loss,
    "pad": _pad, "dropout": _dropout,
    # operators
    "__getitem__": _getitem, "__add__": mx.add, "__radd__": _reflected(mx.add), "__sub__": mx.subtract,
    "__rsub__": _reflected(mx.subtract), "__mul__": mx.multiply, "__rmul__": _reflected(mx.multiply),
    "__truediv__": mx.divide, "__rtruediv__": _reflected(mx.divide), "__matmul__": mx.matmul,
    "__rmatmul__": _reflected(mx.matmul), "__pow__": mx.power, "__rpow__": _reflected(mx.power),
    "__neg__": lambda x: -x, "__abs__": mx.abs, "__eq__": mx.equal, "__ne__": mx.not_equal,
    "__gt__": mx.greater, "__lt__": mx.less, "__ge__": mx.greater_equal, "__le__": mx.less_equal,
    "__and__": mx.logical_and, "__or__": mx.logical_or, "__invert__": mx.logical_not,
    "__floordiv__": mx.floor_divide, "__mod__": mx.remainder,
}
# In-place spellings compute the same value; the proxy layer does the in-place write.
OPS.update({f"{k}_": v for k, v in list(OPS.items()) if k in ("add", "sub", "mul", "div", "clamp", "masked_fill")})


def _name(func: Any) -> str:
    return func if isinstance(func, str) else getattr(func, "__name__", "")


def is_supported(func_or_name: Any) -> bool:
    return _name(func_or_name) in OPS


def supported_ops() -> list[str]:
    """Names of the translated torch functions and tensor methods."""
    return sorted(OPS)


def call_torch_function(func: Any, args: tuple, kwargs: dict) -> Any:
    """Run the torch callable ``func`` (as ``__torch_function__`` receives it) on MLX values."""
    impl = OPS.get(_name(func))
    if impl is None:
        raise UnsupportedTorchOp(describe(func))
    args, kwargs = to_mlx((args, kwargs))
    kwargs.pop("out", None)
    return impl(*args, **kwargs)


def call_tensor_method(name: str, array: mx.array, args: tuple, kwargs: dict) -> Any:
    """``array.<name>(*args, **kwargs)`` with torch's meaning."""
    impl = OPS.get(name)
    if impl is None:
        raise UnsupportedTorchOp(describe(name))
    args, kwargs = to_mlx((args, kwargs))
    return impl(array, *args, **kwargs)
