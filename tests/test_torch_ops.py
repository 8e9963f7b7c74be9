"""torch ops replayed on MLX arrays (mlxsight.torch_ops) against real torch on the same inputs."""

import math

import mlx.core as mx  # noqa: I001 - mlx before torch/nnsight (see conftest)
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mlxsight import torch_ops
from mlxsight.torch_ops import UnsupportedTorchOp, call_tensor_method, call_torch_function

# torch warns that kl_div's 'mean' will change meaning; we match what it computes today
pytestmark = pytest.mark.filterwarnings("ignore:reduction. 'mean' divides:UserWarning")

rng = np.random.default_rng(0)


def r(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def pos(*shape):
    return (rng.random(shape) + 0.1).astype(np.float32)


def ints(high, *shape):
    return rng.integers(0, high, shape).astype(np.int64)


def _to_torch(x):
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x.copy())
    if isinstance(x, (list, tuple)):
        return type(x)(_to_torch(v) for v in x)
    return x


def _to_mx(x):
    if isinstance(x, np.ndarray):
        return mx.array(x.copy())  # a C-ordered copy (MLX refuses negative strides)
    if isinstance(x, (list, tuple)):
        return type(x)(_to_mx(v) for v in x)
    return x


def assert_same(got, want, rtol=1e-5, atol=1e-6):
    """``got`` (MLX) equals ``want`` (torch): structure, fields, shapes, dtypes and values."""
    if isinstance(want, torch.Tensor):
        assert isinstance(got, mx.array), type(got)
        assert tuple(got.shape) == tuple(want.shape), (got.shape, want.shape)
        assert torch_ops.torch_dtype(got.dtype) == want.dtype, (got.dtype, want.dtype)
        g = np.array(got.astype(mx.float32) if got.dtype == mx.bfloat16 else got)
        w = want.float().numpy() if want.dtype == torch.bfloat16 else want.numpy()
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, equal_nan=True)
    elif isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want)
        for field in ("values", "indices"):
            if hasattr(want, field):
                assert_same(getattr(got, field), getattr(want, field), rtol, atol)
        for g, w in zip(got, want):
            assert_same(g, w, rtol, atol)
    else:
        assert got == want, (got, want)


def check(func, *args, **kwargs):
    want = func(*_to_torch(args), **{k: _to_torch(v) for k, v in kwargs.items()})
    got = call_torch_function(func, _to_mx(args), {k: _to_mx(v) for k, v in kwargs.items()})
    assert_same(got, want)


def check_method(name, x, *args, **kwargs):
    want = getattr(_to_torch(x), name)(*_to_torch(args), **{k: _to_torch(v) for k, v in kwargs.items()})
    got = call_tensor_method(name, _to_mx(x), _to_mx(args), {k: _to_mx(v) for k, v in kwargs.items()})
    assert_same(got, want)
    # the same call as __torch_function__ delivers it: torch.Tensor.<name>(self, ...)
    got = call_torch_function(getattr(torch.Tensor, name), (_to_mx(x), *_to_mx(args)),
                              {k: _to_mx(v) for k, v in kwargs.items()})
    assert_same(got, want)


X = r(2, 3, 5)
M = r(4, 6)
V = r(6)
LOGITS = r(4, 7)
TARGET = ints(7, 4)
MASK = rng.random((2, 3, 5)) > 0.5

FUNCTION_CASES = [
    # unary
    *[(getattr(torch, n), (X,), {}) for n in
      ["abs", "neg", "exp", "expm1", "sin", "cos", "tanh", "sigmoid", "erf", "floor", "ceil", "trunc", "sign",
       "square", "round", "isnan", "isfinite", "relu", "atan"]],
    *[(getattr(torch, n), (pos(3, 4),), {}) for n in ["log", "log2", "log10", "log1p", "sqrt", "rsqrt",
                                                         "reciprocal"]],
    (torch.round, (X * 10,), {"decimals": 1}),
    # binary
    *[(getattr(torch, n), (X, r(3, 5)), {}) for n in
      ["add", "sub", "mul", "div", "maximum", "minimum", "atan2", "eq", "ne", "lt", "le", "gt", "ge"]],
    (torch.add, (X, 2.5), {"alpha": 3}),
    (torch.sub, (X, r(5)), {"alpha": 0.5}),
    (torch.div, (X, r(5)), {"rounding_mode": "floor"}),
    (torch.div, (X, r(5)), {"rounding_mode": "trunc"}),
    (torch.div, (ints(20, 4) - 10, ints(5, 4) + 1), {"rounding_mode": "trunc"}),
    (torch.div, (ints(20, 4) - 10, ints(5, 4) + 1), {}),
    (torch.floor_divide, (ints(20, 6) - 10, ints(5, 6) + 1), {}),
    (torch.remainder, (X * 5, 1.5), {}),
    (torch.fmod, (X * 5, 1.5), {}),
    (torch.fmod, (ints(20, 6) - 10, ints(5, 6) + 1), {}),
    (torch.pow, (pos(3, 4), 2.5), {}),
    (torch.pow, (pos(3, 4), r(3, 4)), {}),
    (torch.clamp, (X,), {"min": -0.5, "max": 0.5}),
    (torch.clamp, (X,), {"min": -0.2}),
    (torch.clip, (X, None, 0.1), {}),
    (torch.where, (MASK, X, 0.0), {}),
    (torch.where, (MASK, X, r(3, 5)), {}),
    (torch.where, (MASK,), {}),
    (torch.nonzero, (MASK,), {}),
    (torch.masked_fill, (X, MASK, -1e9), {}),
    (torch.lerp, (X, r(2, 3, 5), 0.3), {}),
    (torch.logical_and, (MASK, ~MASK[0]), {}),
    (torch.logical_xor, (MASK, MASK[:, ::-1]), {}),
    # reductions
    (torch.sum, (X,), {}), (torch.sum, (X, -1), {}), (torch.sum, (X, (0, 2)), {"keepdim": True}),
    (torch.sum, (MASK,), {"dim": 1}), (torch.sum, (ints(9, 3, 4),), {}),
    (torch.sum, (X,), {"dim": 1, "dtype": torch.float16}),
    (torch.mean, (X, 1), {}), (torch.prod, (X, 2), {}),
    (torch.var, (X,), {}), (torch.var, (X, 1), {}), (torch.var, (X, 1, False), {}),
    (torch.var, (X,), {"dim": -1, "correction": 0, "keepdim": True}), (torch.var, (X, False), {}),
    (torch.std, (X,), {}), (torch.std, (X,), {"dim": (0, 1), "unbiased": False}),
    (torch.var_mean, (X, 1), {}), (torch.std_mean, (X,), {"dim": 2}),
    (torch.logsumexp, (X, -1), {}), (torch.amax, (X,), {"dim": (0, 2)}), (torch.amin, (X,), {}),
    (torch.max, (X,), {}), (torch.max, (X, 1), {}), (torch.max, (X,), {"dim": -1, "keepdim": True}),
    (torch.max, (X, r(3, 5)), {}), (torch.min, (X, 0), {}), (torch.min, (X,), {}),
    (torch.argmax, (X,), {}), (torch.argmax, (X, 1), {}), (torch.argmax, (X,), {"keepdim": True}),
    (torch.argmin, (X,), {"dim": -1, "keepdim": True}),
    (torch.sum, (X,), {"dim": ()}), (torch.std, (X,), {"dim": []}), (torch.any, (X,), {"dim": ()}),
    (torch.all, (MASK,), {}), (torch.any, (MASK, 1), {}), (torch.count_nonzero, (MASK,), {"dim": 0}),
    (torch.norm, (X,), {}), (torch.norm, (X,), {"dim": -1}), (torch.norm, (X, 1), {"dim": (1, 2)}),
    (torch.norm, (X,), {"p": math.inf, "dim": 0, "keepdim": True}), (torch.norm, (X, 3), {}),
    (torch.norm, (X, "fro"), {"dim": (0, 1)}), (torch.norm, (X, 0), {}),
    (torch.linalg.vector_norm, (X,), {}), (torch.linalg.vector_norm, (X, 1, -1), {}),
    (torch.linalg.norm, (M,), {}), (torch.linalg.norm, (M,), {"dim": 1}),
    (torch.linalg.norm, (V, 3), {}), (torch.linalg.norm, (M, "fro"), {}),
    (torch.sort, (X,), {}), (torch.sort, (X, 0), {"descending": True}),
    (torch.argsort, (X,), {"dim": 1, "descending": True}),
    (torch.topk, (X, 2), {}), (torch.topk, (X, 3, 1), {"largest": False}),
    (torch.median, (X,), {}), (torch.median, (r(4, 6), 1), {}), (torch.median, (r(5, 3), 0, True), {}),
    (torch.cumsum, (X, 1), {}), (torch.cumsum, (ints(5, 6), 0), {}), (torch.cumprod, (X, -1), {}),
    # products
    (torch.matmul, (M, r(6, 3)), {}), (torch.matmul, (V, V), {}), (torch.matmul, (r(2, 4, 6), V), {}),
    (torch.matmul, (V, r(2, 6, 3)), {}), (torch.mm, (M, r(6, 2)), {}), (torch.bmm, (X, r(2, 5, 4)), {}),
    (torch.dot, (V, V), {}), (torch.outer, (V, r(3)), {}), (torch.einsum, ("bij,bjk->bik", X, r(2, 5, 4)), {}),
    (torch.einsum, ("ij,j->i", [M, V]), {}),
    # shapes and indexing
    (torch.cat, ([X, X[:, :1]],), {"dim": 1}), (torch.cat, ((X, X),), {}), (torch.cat, ([X, X], -1), {}),
    (torch.concat, ([M, M],), {"dim": 1}), (torch.stack, ([M, M, M],), {}),
    (torch.stack, ([M, M],), {"dim": -1}), (torch.hstack, ([M, M],), {}), (torch.vstack, ([V, V],), {}),
    (torch.split, (X, 2, 2), {}), (torch.split, (X, [1, 2], 1), {}), (torch.chunk, (X, 2, -1), {}),
    (torch.chunk, (r(7, 2), 3), {}), (torch.tensor_split, (r(7, 2), 3), {}),
    (torch.tensor_split, (r(7, 2), [2, 5]), {}), (torch.unbind, (X, 1), {}),
    (torch.reshape, (X, (5, -1)), {}), (torch.flatten, (X,), {}), (torch.flatten, (X, 1), {}),
    (torch.flatten, (X,), {"start_dim": 0, "end_dim": 1}), (torch.unflatten, (M, 1, (2, 3)), {}),
    (torch.squeeze, (r(1, 3, 1),), {}), (torch.squeeze, (r(1, 3, 1), 1), {}),
    (torch.squeeze, (r(1, 3, 1), -1), {}), (torch.unsqueeze, (X, -1), {}), (torch.unsqueeze, (X, 1), {}),
    (torch.transpose, (X, 0, -1), {}), (torch.swapaxes, (X, 1, 2), {}), (torch.t, (M,), {}),
    (torch.permute, (X, (2, 0, 1)), {}), (torch.movedim, (X, 0, -1), {}),
    (torch.movedim, (X, (0, 1), (2, 0)), {}), (torch.broadcast_to, (V, (3, 6)), {}),
    (torch.tile, (M, (2, 1)), {}), (torch.repeat_interleave, (M, 2), {"dim": 1}),
    (torch.repeat_interleave, (M, 2), {}), (torch.flip, (X, (0, 2)), {}), (torch.roll, (X, 1, 2), {}),
    (torch.roll, (X, (1, -2), (0, 2)), {}), (torch.roll, (X, 4), {}), (torch.tril, (M,), {}),
    (torch.triu, (X, 1), {}), (torch.tril, (M, -1), {}), (torch.diagonal, (M,), {}),
    (torch.narrow, (X, 2, 1, 3), {}), (torch.narrow, (X, -1, -2, 2), {}),
    (torch.index_select, (X, 2, np.array([4, 0, 0])), {}),
    (torch.gather, (X, 2, ints(5, 2, 3, 2)), {}), (torch.gather, (X, 1, ints(3, 1, 2, 5)), {}),
    (torch.take_along_dim, (X, ints(5, 2, 3, 1), 2), {}),
    (torch.scatter, (np.zeros((3, 5), np.float32), 1, np.array([[0, 1], [2, 3], [4, 0]]), r(3, 2)), {}),
    (torch.scatter_add, (np.zeros((3, 5), np.float32), 1, np.array([[0, 0], [2, 3], [4, 4]]), r(3, 2)), {}),
    (torch.zeros_like, (X,), {}), (torch.ones_like, (X,), {"dtype": torch.int64}),
    (torch.full_like, (M, 3.5), {}), (torch.full_like, (M, 2), {"dtype": torch.bool}),
    # activations and torch.nn.functional
    (torch.softmax, (X, -1), {}), (torch.softmax, (X, 1), {}), (torch.log_softmax, (X,), {"dim": 0}),
    (torch.softmax, (X, -1), {"dtype": torch.float32}),
    (F.softmax, (X,), {"dim": -1}), (F.log_softmax, (X, 1), {}), (F.gelu, (X,), {}),
    (F.gelu, (X,), {"approximate": "tanh"}), (F.relu, (X,), {}), (F.silu, (X,), {}), (F.sigmoid, (X,), {}),
    (F.tanh, (X,), {}), (F.softplus, (X * 20,), {}), (F.softplus, (X,), {"beta": 2.0, "threshold": 1.0}),
    (F.leaky_relu, (X, 0.2), {}), (F.elu, (X,), {}), (F.glu, (r(3, 6),), {}), (F.logsigmoid, (X,), {}),
    (F.dropout, (X,), {"p": 0.3, "training": False}),
    (F.layer_norm, (X, (5,)), {}), (F.layer_norm, (X, (3, 5), r(3, 5), r(3, 5)), {"eps": 1e-3}),
    (F.rms_norm, (X, (5,), r(5)), {}), (F.normalize, (X,), {}), (F.normalize, (X,), {"p": 1, "dim": -1}),
    (F.cosine_similarity, (X, r(2, 3, 5)), {}), (F.cosine_similarity, (X, r(5)), {"dim": -1}),
    (F.pairwise_distance, (M, r(4, 6)), {}),
    (F.linear, (X, r(4, 5)), {}), (F.linear, (X, r(4, 5), r(4)), {}),
    (F.cross_entropy, (LOGITS, TARGET), {}), (F.cross_entropy, (LOGITS, TARGET), {"reduction": "none"}),
    (F.cross_entropy, (LOGITS, TARGET), {"reduction": "sum"}),
    (F.cross_entropy, (LOGITS, np.array([1, -100, 3, -100])), {}),
    (F.cross_entropy, (LOGITS, TARGET), {"weight": pos(7)}),
    (F.cross_entropy, (LOGITS, TARGET), {"label_smoothing": 0.1}),
    (F.cross_entropy, (LOGITS, np.array([1, -100, 3, 0])), {"label_smoothing": 0.2, "reduction": "sum"}),
    (F.cross_entropy, (r(2, 7, 3), ints(7, 2, 3)), {}),
    (F.cross_entropy, (LOGITS, np.exp(LOGITS) / np.exp(LOGITS).sum(-1, keepdims=True)), {}),
    (F.cross_entropy, (r(7), np.array(3)), {}),
    (F.nll_loss, (LOGITS, TARGET), {}), (F.nll_loss, (LOGITS, TARGET), {"weight": pos(7), "reduction": "none"}),
    (F.kl_div, (LOGITS, pos(4, 7)), {"reduction": "batchmean"}),
    (F.kl_div, (LOGITS, np.where(MASK[0, :, :4].T, 0.0, 0.3).astype(np.float32)[:, :3].repeat(3, 1)[:, :7]),
     {"reduction": "sum"}),
    (F.kl_div, (LOGITS, LOGITS[::-1].copy()), {"log_target": True, "reduction": "mean"}),
    (F.kl_div, (LOGITS, pos(4, 7)), {"reduction": "none"}),
    (F.mse_loss, (X, r(2, 3, 5)), {}), (F.mse_loss, (X, r(2, 3, 5)), {"reduction": "sum"}),
    (F.l1_loss, (X, r(2, 3, 5)), {"reduction": "none"}),
    (F.binary_cross_entropy_with_logits, (M, rng.random((4, 6)).astype(np.float32)), {}),
    (F.one_hot, (TARGET, 9), {}), (F.one_hot, (TARGET,), {}), (F.embedding, (TARGET, r(7, 3)), {}),
    (F.pad, (X, (1, 2)), {}), (F.pad, (X, (0, 0, 2, 1), "constant", 3.0), {}), (F.pad, (X, (-1, 1, 1, -2)), {}),
]


def _case_id(case):
    func, args, kwargs = case
    return torch_ops.describe(func) + ("(" + ",".join(f"{k}" for k in kwargs) + ")" if kwargs else "")


@pytest.mark.parametrize("func,args,kwargs", FUNCTION_CASES, ids=[_case_id(c) for c in FUNCTION_CASES])
def test_function_matches_torch(func, args, kwargs):
    check(func, *args, **kwargs)


METHOD_CASES = [
    ("softmax", X, (), {"dim": -1}), ("log_softmax", X, (1,), {}), ("argmax", X, (), {"dim": -1, "keepdim": True}),
    ("argmax", X, (), {}), ("norm", X, (), {"dim": -1, "p": 2}), ("norm", X, (), {}),
    ("max", X, (), {"dim": 1}), ("max", X, (1, True), {}), ("max", X, (), {}), ("min", X, (-1,), {}),
    ("sum", X, (), {"dim": (0, 1), "keepdim": True}), ("sum", X, (-1,), {}), ("mean", X, (), {"dim": -1}),
    ("var", X, (1,), {}), ("std", X, (), {"dim": 0, "unbiased": False}),
    ("topk", X, (3,), {}), ("topk", X, (2,), {"dim": 0, "largest": False}), ("sort", X, (), {"descending": True}),
    ("abs", X, (), {}), ("pow", X, (2,), {}), ("sqrt", pos(3), (), {}), ("exp", X, (), {}), ("log", pos(3), (), {}),
    ("clamp", X, (), {"min": 0}), ("masked_fill", X, (MASK, 0.5), {}),
    ("unsqueeze", X, (0,), {}), ("unsqueeze", X, (-1,), {}), ("squeeze", r(3, 1, 2), (), {}),
    ("squeeze", X, (0,), {}), ("squeeze", r(3, 1, 2), (1,), {}), ("expand", r(3, 1), (2, 3, 4), {}),
    ("expand", r(3, 1), (-1, 5), {}), ("expand_as", r(3, 1), (r(3, 4),), {}), ("repeat", M, (2, 1, 3), {}),
    ("repeat", M, ((1, 2),), {}), ("view", X, (6, 5), {}), ("view", X, (-1,), {}), ("view", X, ((3, -1),), {}),
    ("reshape", X, (2, -1), {}), ("permute", X, (2, 0, 1), {}), ("permute", X, ((1, 0, 2),), {}),
    ("transpose", X, (0, 1), {}), ("transpose", X, (-1, -2), {}), ("t", M, (), {}), ("contiguous", X, (), {}),
    ("flatten", X, (), {}), ("flatten", X, (1,), {}), ("detach", X, (), {}), ("clone", X, (), {}),
    ("cpu", X, (), {}), ("float", ints(3, 4), (), {}), ("half", X, (), {}), ("bfloat16", X, (), {}),
    ("long", X * 3, (), {}), ("int", X * 3, (), {}), ("bool", X, (), {}),
    ("to", X, (torch.float16,), {}), ("to", X, ("cpu",), {}), ("to", X, ("cpu", torch.bfloat16), {}),
    ("to", X, (), {"dtype": torch.int64}), ("to", X, (torch.device("cpu"),), {}), ("to", X, (ints(3, 2),), {}),
    ("type", X, (torch.float16,), {}), ("type", X, ("torch.LongTensor",), {}), ("type_as", X, (ints(3, 2),), {}),
    ("new_zeros", X, ((2, 3),), {}), ("new_ones", X, (2, 3), {}), ("new_full", X, ((2,), 7.0), {}),
    ("new_zeros", X, (4,), {"dtype": torch.int64}), ("new_tensor", X, ([1, 2],), {}),
    ("size", X, (), {}), ("size", X, (-1,), {}), ("dim", X, (), {}), ("numel", X, (), {}),
    ("index_select", X, (1, np.array([2, 0])), {}), ("gather", X, (2, ints(5, 2, 3, 4)), {}),
    ("eq", X, (X,), {}), ("gt", X, (0,), {}), ("all", MASK, (), {}), ("any", MASK, (), {"dim": -1}),
    ("cumsum", X, (), {"dim": -1}), ("argsort", X, (), {"dim": 0}), ("logsumexp", X, (1,), {}),
    ("flip", X, (0, 1), {}), ("flip", X, ((2,),), {}), ("chunk", X, (3, 2), {}), ("split", X, (2,), {"dim": 2}),
    ("unbind", X, (), {}), ("roll", X, (1,), {"dims": 0}), ("narrow", X, (1, 0, 2), {}),
    ("relu", X, (), {}), ("sigmoid", X, (), {}), ("tanh", X, (), {}), ("amax", X, (-1,), {}),
    ("div", X, (2,), {"rounding_mode": "floor"}), ("add", X, (1,), {"alpha": 2}), ("matmul", M, (V,), {}),
    ("__add__", X, (1.0,), {}), ("__rsub__", X, (1.0,), {}), ("__rtruediv__", X, (2.0,), {}),
    ("__matmul__", M, (r(6, 2),), {}), ("__getitem__", X, ((0, slice(1, None)),), {}),
    ("__pow__", pos(3), (0.5,), {}), ("__neg__", X, (), {}), ("tril", M, (), {}), ("prod", X, (1,), {}),
    ("nonzero", MASK, (), {}), ("median", X, (), {"dim": -1}), ("where", X, (MASK, 0.0), {}),
]


@pytest.mark.parametrize("name,x,args,kwargs", METHOD_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(METHOD_CASES)])
def test_method_matches_torch(name, x, args, kwargs):
    check_method(name, x, *args, **kwargs)


def test_cuda_and_device_arguments_are_ignored():
    x = mx.array(X)
    for name, args, kwargs in [("cuda", (), {}), ("to", ("cuda:0",), {}), ("to", (), {"device": "cuda"}),
                               ("to", ("cuda", torch.float16), {"non_blocking": True})]:
        out = call_tensor_method(name, x, args, kwargs)
        np.testing.assert_array_equal(np.array(out.astype(mx.float32)),
                                      np.array(x.astype(out.dtype).astype(mx.float32)))
    out = call_torch_function(torch.zeros_like, (x,), {"device": "cuda", "requires_grad": False})
    assert out.shape == x.shape and out.dtype == mx.float32


def test_axis_keyword_and_torch_tensor_arguments():
    t = torch.from_numpy(X)
    assert_same(call_torch_function(torch.sum, (mx.array(X),), {"axis": 1}), torch.sum(t, axis=1))
    # torch tensors and torch.Size among the arguments become MLX values
    assert_same(call_torch_function(torch.add, (mx.array(X), t), {}), t + t)
    assert_same(call_tensor_method("view", mx.array(X), (torch.Size([5, 6]),), {}), t.view(torch.Size([5, 6])))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64,
                                   torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool])
def test_dtype_mapping_round_trips(dtype):
    m = torch_ops.mx_dtype(dtype)
    assert torch_ops.torch_dtype(m) == dtype
    assert torch_ops.mx_dtype(str(dtype)) == m
    t = torch.ones(2, dtype=dtype)
    assert torch_ops.to_mlx(t).dtype == m


def test_return_types_have_values_and_indices():
    out = call_tensor_method("max", mx.array(X), (), {"dim": -1})
    values, indices = out
    assert out.values is values and out.indices is indices and indices.dtype == mx.int64
    out = call_torch_function(torch.topk, (mx.array(X), 2), {})
    assert out.values.shape == (2, 3, 2) and out.indices.dtype == mx.int64


@pytest.mark.parametrize("func,args,kwargs,name", [
    (torch.fft.fft, (X,), {}, "torch.fft.fft"),
    (torch.linalg.svd, (M,), {}, "torch.linalg.svd"),
    (F.conv1d, (X, X), {}, "torch.conv1d"),  # the same object as torch.conv1d
    (F.hardswish, (X,), {}, "torch.nn.functional.hardswish"),
    (torch.histc, (X,), {}, "torch.histc"),
    (torch.Tensor.index_put_, (X, (X,), X), {}, "torch.Tensor.index_put_"),
    (torch.norm, (M, "nuc"), {}, "torch.norm(p='nuc')"),
    (torch.linalg.norm, (M, 2), {}, "torch.linalg.norm(ord=2) of a matrix"),
    (F.dropout, (X,), {}, "torch.nn.functional.dropout(training=True)"),
    (F.relu, (X,), {"inplace": True}, "torch.nn.functional.relu(inplace=True)"),
    (F.pad, (X, (1, 1)), {"mode": "reflect"}, "torch.nn.functional.pad(mode='reflect')"),
    (torch.sum, (X,), {"out": X}, "torch.sum(out=...)"),
])
def test_unsupported_ops_raise_naming_the_op(func, args, kwargs, name):
    if not any(isinstance(v, str) for v in args) and "(" not in name:
        assert not torch_ops.is_supported(func)
    with pytest.raises(UnsupportedTorchOp, match=name.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")) \
            as info:
        call_torch_function(func, _to_mx(args), _to_mx(kwargs))
    assert isinstance(info.value, NotImplementedError)
    assert "mlxsight.apply" in str(info.value)


def test_unsupported_method_raises():
    assert not torch_ops.is_supported("index_put_")
    with pytest.raises(UnsupportedTorchOp, match=r"torch\.Tensor\.index_put_"):
        call_tensor_method("index_put_", mx.array(X), (), {})


def test_describe_and_supported_ops_listing():
    assert torch_ops.describe(torch.softmax) == "torch.softmax"
    assert torch_ops.describe(F.gelu) == "torch.nn.functional.gelu"
    assert torch_ops.describe(torch.Tensor.max) == "torch.Tensor.max"
    assert torch_ops.describe(torch.special.erfcx) == "torch.special.erfcx"
    ops = torch_ops.supported_ops()
    for name in ["torch.softmax", "torch.cat", "torch.nn.functional.cross_entropy", "torch.linalg.vector_norm"]:
        assert name in ops["functions"]
    for name in ["torch.Tensor.softmax", "torch.Tensor.to", "torch.Tensor.max"]:
        assert name in ops["methods"]
    # every listed name is a real torch object that is_supported recognises
    for name in ops["functions"] + ops["methods"]:
        obj = torch
        for part in name.split(".")[1:]:
            obj = getattr(obj, part)
        assert torch_ops.is_supported(obj), name


# -- hypothesis: shapes, dims, keepdim ------------------------------------------------------------

shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple)


@st.composite
def array_dim(draw):
    shape = draw(shapes)
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    data = np.random.default_rng(draw(st.integers(0, 2**16))).standard_normal(shape).astype(np.float32)
    return data, dim


REDUCTIONS = [torch.sum, torch.mean, torch.amax, torch.logsumexp, torch.argmax, torch.max, torch.min, torch.var,
              torch.std, torch.norm, torch.cumsum, torch.softmax, torch.log_softmax, torch.argsort]


@settings(max_examples=40, deadline=None)
@given(array_dim(), st.booleans(), st.sampled_from(REDUCTIONS))
def test_reductions_over_any_dim(x_dim, keepdim, func):
    x, dim = x_dim
    if func is torch.var or func is torch.std:
        if x.shape[dim] < 2:
            return
        check(func, x, dim, keepdim=keepdim)
    elif func in (torch.cumsum, torch.softmax, torch.log_softmax, torch.argsort):
        check(func, x, dim)
    elif func is torch.norm:
        check(func, x, dim=dim, keepdim=keepdim)
    else:
        check(func, x, dim, keepdim=keepdim)


@settings(max_examples=25, deadline=None)
@given(array_dim(), st.integers(1, 4), st.booleans())
def test_topk_any_dim(x_dim, k, largest):
    x, dim = x_dim
    k = min(k, x.shape[dim])
    check(torch.topk, x, k, dim=dim, largest=largest)


@settings(max_examples=25, deadline=None)
@given(array_dim())
def test_shape_ops_any_dim(x_dim):
    x, dim = x_dim
    check(torch.unsqueeze, x, dim)
    check(torch.squeeze, x, dim)
    check(torch.flatten, x, start_dim=min(dim % x.ndim, x.ndim - 1))
    check(torch.transpose, x, dim, 0)
    check(torch.cat, [x, x], dim=dim)
    check(torch.stack, [x, x], dim=dim)
    check(torch.flip, x, (dim,))
    check(torch.chunk, x, 2, dim)


# -- through a trace: proxies record torch calls, the graph runs them here --------------------------

def test_torch_calls_inside_a_trace(stories_path):
    import mlxsight
    from mlxsight.tracer import set_torch_semantics, torch_semantics

    model = mlxsight.LanguageModel(stories_path)
    before = torch_semantics()
    set_torch_semantics(True)  # as the compat runner does for nnsight scripts
    try:
        with model.trace("Once upon a time"):
            h = model.model.layers[1].output
            hs = h.save()
            norms = h.norm(dim=-1).save()
            logits = model.lm_head.output
            ls = logits.save()
            probs = torch.softmax(logits[0, -1], dim=-1).save()
            top = torch.topk(logits[0, -1], 3)[1].save()
            best = logits.max(-1)[1].save()
            gelu = F.gelu(h).save()
            both = torch.cat([h, h], dim=0).save()
    finally:
        set_torch_semantics(before)
    H, L = torch.from_numpy(np.array(hs)), torch.from_numpy(np.array(ls))
    assert_same(norms, H.norm(dim=-1), rtol=1e-5, atol=1e-5)
    assert_same(probs, torch.softmax(L[0, -1], dim=-1))
    assert_same(top, torch.topk(L[0, -1], 3).indices)
    assert_same(best, L.max(-1).indices)
    assert_same(gelu, F.gelu(H), atol=1e-5)
    assert_same(both, torch.cat([H, H], dim=0))


@settings(max_examples=20, deadline=None)
@given(dtype=st.sampled_from(["float32", "float16", "bfloat16", "int32", "int64", "bool_"]),
       shape=st.lists(st.integers(0, 4), max_size=3), seed=st.integers(0, 2 ** 16))
def test_to_torch_is_to_mlxs_inverse(dtype, shape, seed):
    """``torch_ops.to_torch`` turns MLX arrays (in lists, tuples, dicts) into torch tensors of the
    matching dtype and values, and ``to_mlx`` brings them back unchanged."""
    from mlxsight.torch_ops import to_mlx, to_torch, torch_dtype

    x = mx.array(np.random.default_rng(seed).normal(size=shape) * 3).astype(getattr(mx, dtype))
    got = to_torch({"a": [x, (x, 1)], "b": "s"})
    t = got["a"][0]
    assert isinstance(t, torch.Tensor) and t.dtype == torch_dtype(x.dtype) and tuple(t.shape) == x.shape
    assert got["b"] == "s" and isinstance(got["a"][1], tuple) and got["a"][1][1] == 1
    back = to_mlx(got)["a"][1][0]
    assert back.dtype == x.dtype and mx.array_equal(back, x)
