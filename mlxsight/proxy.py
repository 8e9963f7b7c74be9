"""Proxies: stand-ins for values inside a trace. Every operation on one records a graph node.

A proxy knows its value's structure, shape and dtype (its ``meta``: lazy placeholder arrays that
are never evaluated), so ``B, T, D = h.shape``, ``len(out)``, tuple unpacking and ``out[1] is None``
work while recording. In-place edits follow torch's aliasing: an edit of a view writes back into
its base, and views re-derive from a base edited after them (see ``aliasing``).
"""

from __future__ import annotations

import operator
import sys
from typing import TYPE_CHECKING, Any, Callable

import mlx.core as mx

from .aliasing import Index, Item, Reshape, ViewSpec, check_key, getitem, is_basic_key
from .context import save, torch_semantics
from .errors import IndexOutOfRangeError, NegativeStepError, is_library_file, where_now
from .tree import map_matching
from .outputs import ModelOutput

if TYPE_CHECKING:
    from .recorder import Recorder


class Size(tuple):
    """A shape, as ``h.shape`` gives it while recording: a tuple that can also be ``.save()``d
    (nnsight scripts call ``.save()`` on any object, ``torch.Size`` included)."""

    def save(self) -> "Size":
        return save(self)


class _Unknown:
    def __repr__(self) -> str:
        return "<unknown>"


UNKNOWN = _Unknown()
_STATIC_ARRAY_ATTRS = frozenset({"shape", "dtype", "ndim", "size", "itemsize", "nbytes"})
_PRIMITIVES = (type(None), bool, int, float, complex, str, bytes)


def clone(x: mx.array) -> mx.array:
    """A copy that no later edit of the original reaches (torch's ``.clone()``)."""
    return mx.array(x)


def constant(x: Any) -> Any:
    return x


class NodeRef:
    """A node passed to ``record`` as an argument (not a proxy)."""

    def __init__(self, node) -> None:
        self.node = node


def map_proxies(value: Any, fn: Callable[["Proxy"], Any]) -> Any:
    """``value`` with each proxy inside replaced by ``fn(proxy)`` (and node references by their node)."""
    return map_matching(value, (Proxy, NodeRef), lambda p: p.node if isinstance(p, NodeRef) else fn(p))


def proxies_in(values: list, recorder: "Recorder") -> list["Proxy"]:
    """The distinct proxies of ``recorder`` inside ``values``, in the order first met."""
    found: dict[int, Proxy] = {}
    note = lambda p: found.setdefault(id(p), p) if p._recorder is recorder else p  # noqa: E731
    for value in values:
        note(value) if type(value) is Proxy else map_proxies(value, note)  # a lone proxy needs no walk
    return list(found.values())


def substitute(proxies: list["Proxy"], values: list) -> Callable[[Any], Any]:
    """A function replacing each of ``proxies`` (at any depth of its argument) by its value."""
    by_id = {id(p): v for p, v in zip(proxies, values)}
    swap = lambda p: by_id.get(id(p), p)  # noqa: E731
    return lambda value: swap(value) if type(value) is Proxy else map_proxies(value, swap)


def find_recorder(value: Any) -> "Recorder | None":
    """The recorder of the first proxy inside ``value``."""
    found: list = []
    map_proxies(value, lambda p: found.append(p._recorder) or p)
    return found[0] if found else None


def example(value: Any) -> Any:
    """What a proxy stands for while recording (an ``mx.array`` of the right shape and dtype, a
    tuple of them, ...; ``UNKNOWN`` where not known); any other value is returned as it is."""
    return value._meta if isinstance(value, Proxy) else value


def apply(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """Record ``fn(*args, **kwargs)`` (e.g. an ``mlx.core`` function) on proxies inside a trace."""
    recorder = find_recorder((args, kwargs))
    if recorder is None:
        return fn(*args, **kwargs)
    return recorder.record("call_function", fn, args, kwargs)


class Proxy:
    """A value of the forward pass that is not computed yet."""

    def __init__(self, recorder: "Recorder", node, meta: Any = UNKNOWN, label: str = "") -> None:
        self._recorder = recorder
        self._node = node
        self._meta = meta
        self._label = label or node.name
        self._version = 0
        self._view: tuple[Proxy, ViewSpec, int] | None = None  # (base, spec, base version seen)
        self._binds: list = []  # HookPoints / (proxy, spec) this object's edits must reach
        self._children: dict = {}  # element views, cached so ``out[0] is out[0]``

    @property
    def __class__(self) -> type:
        """With torch semantics on (compat), a script's ``isinstance`` sees what nnsight serves: a
        proxied array is a ``torch.Tensor``, a proxied plain tuple a ``tuple``. ``type(x)`` stays
        ``Proxy``, and mlxsight's own code always sees ``Proxy``."""
        if torch_semantics() and not is_library_file(sys._getframe(1).f_code.co_filename):
            if isinstance(self._meta, mx.array):
                torch = sys.modules.get("torch")
                if torch is not None:
                    return torch.Tensor
            elif type(self._meta) is tuple:
                return tuple
        return type(self)

    # -- plumbing ----------------------------------------------------------------------------
    @property
    def node(self):
        """The node holding this object's current value (re-derived if its base was edited)."""
        if self._view is not None:
            base, spec, seen = self._view
            base_node = base.node
            if base._version != seen:
                self._node = self._recorder.emit("view", spec, (base_node,), invoke=self._node.invoke)
                self._version += 1
                self._view = (base, spec, base._version)
        return self._node

    def _record(self, op: str, target: Any, args: tuple, kwargs: dict | None = None, **kw) -> Any:
        return self._recorder.record(op, target, args, kwargs or {}, **kw)

    def _make_view(self, spec: ViewSpec, label: str) -> Any:
        proxy = self._record("view", spec, (self,), label=label)
        if isinstance(proxy, Proxy):
            proxy._view = (self, spec, self._version)
        return proxy

    def _assign(self, new: "Proxy") -> None:
        """Make ``new``'s value this object's value, and push it to whatever this object aliases."""
        self._recorder.check_open()
        self._node, self._meta = new.node, new._meta
        self._version += 1
        if self._view is not None:
            base, spec, _ = self._view
            base._assign(base._record("put", spec, (base, self)))
            self._view = (base, spec, base._version)
        for bind in self._binds:
            # a callable is a write-back its owner keeps (a custom envoy's eproperty transform)
            bind(self) if callable(bind) else self._recorder.bind_write(bind, self)

    def _describe(self) -> str:
        return self._label

    def _mlxsight_owner(self) -> "Recorder":
        """The trace this value belongs to (``mlxsight.save`` asks)."""
        return self._recorder

    # -- saving and concrete values ----------------------------------------------------------
    def save(self) -> "Proxy":
        """Mark this value to be returned from the trace; returns the proxy itself."""
        self._recorder.save(self)
        return self

    def value_now(self) -> Any:
        """Compute this value now (runs the graph recorded so far up to what it needs)."""
        return self._recorder.materialize(self)

    def item(self) -> Any:
        return self.value_now().item()

    def tolist(self) -> Any:
        return self.value_now().tolist()

    def __bool__(self) -> bool:
        return bool(self.value_now())

    def __float__(self) -> float:
        return float(self.value_now())

    def __int__(self) -> int:
        return int(self.value_now())

    def __index__(self) -> int:
        return int(self.value_now())

    def __array__(self, dtype=None, copy=None):
        import numpy as np

        return np.asarray(self.value_now(), dtype=dtype)

    def __mlx_array__(self):
        # MLX asks this when a proxy reaches an MLX function (``mx.exp(proxy)``) or an mx.array is on
        # the left of an operator (``x - proxy``); a real array here would take the value out of the graph.
        raise TypeError(
            f"an MLX function or operator was given the proxy {self._label}, which has no value while "
            f"recording: record MLX functions with mlxsight.apply (`mlxsight.apply(mx.exp, proxy)`), and put "
            f"the proxy first in operators (`proxy + x`, `-(proxy - x)`)")

    def __str__(self) -> str:
        return str(self.value_now())

    def __format__(self, spec: str) -> str:
        value = self.value_now()
        return format(value.item() if isinstance(value, mx.array) and value.size == 1 else value, spec)

    def __repr__(self) -> str:
        meta = self._meta
        if isinstance(meta, mx.array):
            return f"Proxy({self._label}: shape={tuple(meta.shape)}, dtype={meta.dtype})"
        return f"Proxy({self._label})"

    __hash__ = object.__hash__

    # -- structure ---------------------------------------------------------------------------
    def __len__(self) -> int:
        meta = self._meta
        if isinstance(meta, mx.array):
            if meta.ndim == 0:
                raise TypeError("len() of a 0-d array")
            return meta.shape[0]
        if isinstance(meta, (tuple, list, dict)):
            return len(meta)
        raise TypeError(f"len() of {self._label}: its structure is not known while recording")

    def __iter__(self):
        meta = self._meta
        if isinstance(meta, ModelOutput) or isinstance(meta, dict):
            return iter(list(meta.keys()))
        return iter([self[i] for i in range(len(self))])

    def __getitem__(self, key: Any) -> Any:
        meta = self._meta
        if isinstance(meta, (tuple, list, dict)) and not isinstance(key, Proxy):
            element = meta[key]
            if isinstance(element, _PRIMITIVES):
                return element  # ``out[1] is None`` holds, as in nnsight
            cache_key = (type(key), key) if not isinstance(key, slice) else (slice, key.start, key.stop, key.step)
            if cache_key not in self._children:
                self._children[cache_key] = self._make_view(Item(key), f"{self._label}[{key!r}]")
            return self._children[cache_key]
        self._check_key(key)
        if is_basic_key(key):
            from .aliasing import format_key

            return self._make_view(Index(key), f"{self._label}[{format_key(key)}]")
        return self._record("call_function", getitem, (self, key))

    def __setitem__(self, key: Any, value: Any) -> None:
        meta = self._meta
        if isinstance(meta, tuple):
            raise TypeError("'tuple' object does not support item assignment")
        self._check_key(key)
        if isinstance(meta, (list, dict)) or not is_basic_key(key):
            from .aliasing import set_item

            spec_args = ("call_function", _put_item if isinstance(meta, (list, dict)) else set_item)
            new = self._record(spec_args[0], spec_args[1], (self, key, value), label=self._label)
        else:
            new = self._record("put", Index(key), (self, value), label=self._label,
                               context=self._assignment_context(key, value))
        self._assign(new)

    def _check_key(self, key: Any) -> None:
        """Out-of-range indices fail here, at the user's line, as in torch (MLX drops them)."""
        keys = key if isinstance(key, tuple) else (key,)
        if torch_semantics() and any(isinstance(k, slice) and isinstance(k.step, int) and k.step < 0 for k in keys):
            # an nnsight script must fail here as it does on torch, not give values torch never would
            raise NegativeStepError("step must be greater than zero (torch slices have no negative steps)", where_now())
        if isinstance(self._meta, mx.array) and not self._recorder.tracer.example_shapes:
            try:
                check_key(tuple(self._meta.shape), key)
            except IndexError as e:
                raise IndexOutOfRangeError(f"{e} (indexing {self._label}, shape {tuple(self._meta.shape)})",
                                           where_now()) from None

    def _assignment_context(self, key: Any, value: Any) -> str:
        from .aliasing import format_key

        target = f"{self._label}[{format_key(key)}]"
        try:
            target += f" (shape {tuple(self._meta[key].shape)})"
            shape = value._meta.shape if isinstance(value, Proxy) else getattr(value, "shape", ())
            return f"assigning a value of shape {tuple(shape)} into {target}"
        except Exception:  # noqa: BLE001 - the message is best effort; the error itself follows
            return f"assigning into {target}"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        meta = self.__dict__.get("_meta", UNKNOWN)
        if isinstance(meta, ModelOutput) and name in type(meta)._fields:
            return self[name] if name in meta else None
        if isinstance(meta, tuple) and name in getattr(type(meta), "_fields", ()):
            return self[type(meta)._fields.index(name)]  # named tuples: topk(...).indices
        if isinstance(meta, mx.array) and name in _STATIC_TORCH_METHODS and _torch_view(name):
            return _STATIC_TORCH_METHODS[name](meta)
        if isinstance(meta, mx.array) and name in _STATIC_ARRAY_ATTRS:
            value = getattr(meta, name)
            return Size(value) if name == "shape" else value
        if name in ("T", "mT", "real", "imag"):
            return self._record("call_function", getattr, (self, name))
        if name in ("device", "is_cuda") and isinstance(meta, mx.array) and torch_semantics():
            torch = sys.modules.get("torch")  # where compat hands values back: torch on the CPU
            if torch is not None:
                return torch.device("cpu") if name == "device" else False
        if isinstance(meta, mx.array) and not hasattr(meta, name) and not _torch_method(name):
            raise AttributeError(f"{self._label} (an mx.array) has no attribute {name!r}")
        return _Method(self, name)

    # -- torch interoperability (nnsight scripts) --------------------------------------------
    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        """``torch.softmax(proxy, dim=-1)`` and friends: recorded, run as MLX (see torch_ops)."""
        from . import torch_ops

        kwargs = kwargs or {}
        if not torch_ops.is_supported(func):
            raise torch_ops.UnsupportedTorchOp(torch_ops.describe(func))
        recorder = find_recorder((args, kwargs))
        args, kwargs = torch_ops.to_mlx((args, kwargs))
        return recorder.record("call_function", TorchCall(func), args, kwargs)

    # -- array methods with view semantics or special meaning --------------------------------
    def reshape(self, *shape: Any) -> "Proxy":
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return self._make_view(Reshape(shape), f"{self._label}.reshape{shape}")

    def view(self, *shape: Any) -> "Proxy":
        if len(shape) == 1 and not isinstance(shape[0], (int, tuple, list)):  # a dtype: reinterpret bits
            from .torch_ops import mx_dtype

            return self._record("call_method", "view", (self, mx_dtype(shape[0])))
        return self.reshape(*shape)

    def clone(self) -> "Proxy":
        return self._record("call_function", clone, (self,))

    copy = clone

    def detach(self) -> "Proxy":
        return self  # MLX arrays carry no autograd tape to detach from

    # -- gradients ---------------------------------------------------------------------------
    def backward(self, gradient: Any = None, retain_graph: Any = None, **_: Any) -> "Backward":
        """Make this value the loss whose gradients ``.grad`` reads (works with or without ``with``)."""
        self._recorder.gradients.set_loss(self, gradient)
        return Backward()

    @property
    def grad(self) -> "Proxy | None":
        """d(loss)/d(this value) in the latest ``backward()``'s pass (``None`` before any, as in torch)."""
        return self._recorder.gradients.grad_of(self)

    @grad.setter
    def grad(self, value: Any) -> None:
        """Replace the gradient flowing on from this value (to earlier values and later reads)."""
        self._recorder.gradients.set_grad(self, value)

    def retain_grad(self) -> None:
        return None  # every proxied value can give its gradient

    def requires_grad_(self, requires_grad: bool = True) -> "Proxy":
        return self


class Backward:
    """What ``loss.backward()`` returns: usable as ``with loss.backward():`` as in nnsight."""

    def __enter__(self) -> "Backward":
        return self

    def __exit__(self, *exc: Any) -> bool:
        return False


def _put_item(container: Any, key: Any, value: Any) -> Any:
    return Item(key).put(container, value)


def _size(meta: mx.array):
    def size(dim: int | None = None) -> Any:
        return Size(meta.shape) if dim is None else meta.shape[dim]

    return size


# torch methods whose answers are static Python values (scripts do arithmetic with them).
_STATIC_TORCH_METHODS = {
    "size": _size,
    "dim": lambda meta: (lambda: meta.ndim),
    "ndimension": lambda meta: (lambda: meta.ndim),
    "numel": lambda meta: (lambda: meta.size),
    "element_size": lambda meta: (lambda: meta.itemsize),
}


def _torch_view(name: str) -> bool:
    """``size`` is an attribute in MLX and a method in torch: torch's meaning under torch semantics."""
    return name != "size" or torch_semantics()


_TORCH_ONLY_KWARGS = frozenset({"dim", "keepdim", "dtype", "device", "memory_format", "non_blocking"})


def _torch_method(name: str) -> bool:
    try:
        from . import torch_ops
    except ImportError:
        return False
    return torch_ops.is_supported(name)


def _wants_torch(name: str, args: tuple, kwargs: dict) -> bool:
    """Whether a method call is written with torch's meaning (names or keywords MLX lacks)."""
    if torch_semantics() or (kwargs.keys() & _TORCH_ONLY_KWARGS):
        return _torch_method(name)
    return not hasattr(mx.array, name) and _torch_method(name)


# Names of torch calls that draw from a random stream: running one twice is not running it once.
_RANDOM = ("rand", "normal", "bernoulli", "multinomial", "dropout", "seed", "poisson", "exponential", "uniform")


def _effect_free(name: str) -> bool:
    """Whether a torch call of this name may run and be discarded (see Runner.effect_free)."""
    return not any(word in name for word in _RANDOM)


class TorchMethod:
    """A tensor method with torch's signature, run on MLX arrays by ``torch_ops``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.__name__ = self.__qualname__ = f"torch.Tensor.{name}"
        self.pure = _effect_free(name)

    def __call__(self, array: Any, *args: Any, **kwargs: Any) -> Any:
        from . import torch_ops

        return torch_ops.call_tensor_method(self.name, array, args, kwargs)


class TorchCall:
    """A torch function (``torch.softmax``, ``F.gelu``...), run on MLX arrays by ``torch_ops``."""

    def __init__(self, func: Any) -> None:
        self.func = func
        from . import torch_ops

        self.__name__ = self.__qualname__ = torch_ops.describe(func)
        self.pure = _effect_free(self.__name__)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from . import torch_ops

        return torch_ops.call_torch_function(self.func, args, kwargs)


class _Method:
    """``proxy.name`` before the call: records ``call_method`` when called."""

    def __init__(self, proxy: Proxy, name: str) -> None:
        self.proxy, self.name = proxy, name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if _wants_torch(self.name, args, kwargs):
            from . import torch_ops

            args, kwargs = torch_ops.to_mlx((args, kwargs))
            return self.proxy._record("call_function", TorchMethod(self.name), (self.proxy, *args), kwargs)
        return self.proxy._record("call_method", self.name, (self.proxy, *args), kwargs)

    def __repr__(self) -> str:
        return f"<method {self.name} of {self.proxy._label}>"


def _binary(fn):
    def method(self, other):
        return self._record("call_function", fn, (self, other))

    return method


def _reflected(fn):
    def method(self, other):
        return self._record("call_function", fn, (other, self))

    return method


def _inplace(fn):
    def method(self, other):
        self._assign(self._record("call_function", fn, (self, other), context=f"updating {self._label} in place"))
        return self

    return method


def _unary(fn):
    def method(self):
        return self._record("call_function", fn, (self,))

    return method


BINARY_OPS = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "truediv": operator.truediv,
    "floordiv": operator.floordiv, "mod": operator.mod, "pow": operator.pow,
    "matmul": operator.matmul, "and": operator.and_, "or": operator.or_, "xor": operator.xor,
    "lshift": operator.lshift, "rshift": operator.rshift,
}
for _name, _fn in BINARY_OPS.items():
    setattr(Proxy, f"__{_name}__", _binary(_fn))
    setattr(Proxy, f"__r{_name}__", _reflected(_fn))
    setattr(Proxy, f"__i{_name}__", _inplace(_fn))
for _name, _fn in {"lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge,
                   "eq": operator.eq, "ne": operator.ne}.items():
    setattr(Proxy, f"__{_name}__", _binary(_fn))
for _name, _fn in {"neg": operator.neg, "pos": operator.pos, "abs": operator.abs,
                   "invert": operator.invert}.items():
    setattr(Proxy, f"__{_name}__", _unary(_fn))
