"""Run a schedule inside one forward pass of the MLX model.

Only the modules the schedule names are hooked. At each hook point the runner fires that point's
nodes in recording order on the live value (``read`` takes it, ``write`` replaces it), and stops
the forward once the last needed point has fired: MLX is lazy, so nothing after it is built.
"""

from __future__ import annotations

from typing import Any, Callable

import mlx.core as mx
import mlx.nn as nn

from .batching import assemble_skip
from .compiler import Schedule, grad_key
from .errors import IndexOutOfRangeError, TraceError
from .graph import HookPoint, Node, map_nodes
from .hooks import active, observing, suspended
from .source import module_of
from .structure import CallCounter
from .tree import find_all, map_matching, map_tree, zip_tree


class _NeverReached:
    def __repr__(self) -> str:
        return "<never reached>"


NEVER_REACHED = _NeverReached()  # a value from a hook point the run never made (e.g. after EOS)
ROOT_OUTPUT = HookPoint("", "output", 0)


# What a node may call and still be run speculatively, then discarded (Runner.effect_free).
_EFFECT_FREE_MODULES = ("mlx.", "mlx_lm.", "mlxsight.", "numpy", "operator", "_operator", "math")
_RANDOM_MODULES = ("mlx.core.random", "numpy.random")
_MUTATORS = frozenset({"append", "extend", "insert", "pop", "popitem", "remove", "clear", "update", "setdefault",
                       "add", "discard", "sort", "reverse"})


class _StopForward(Exception):
    """Raised after the last needed hook point: the rest of the forward is not needed."""


class Evaluator:
    """Computes the pure opcodes on concrete or placeholder values: one method per opcode.

    While recording it runs on placeholder arrays to learn each node's shape and dtype (nothing is
    evaluated: MLX is lazy); the runner inherits it for the real values."""

    def __init__(self, modules: dict[str, nn.Module]) -> None:
        self.modules = modules

    def evaluate(self, node: Node, args: tuple, kwargs: dict) -> Any:
        return getattr(self, node.op)(node, args, kwargs)

    def view(self, node: Node, args: tuple, kwargs: dict) -> Any:
        return node.target.get(args[0])

    def put(self, node: Node, args: tuple, kwargs: dict) -> Any:
        return node.target.put(args[0], args[1])

    def call_function(self, node: Node, args: tuple, kwargs: dict) -> Any:
        return node.target(*args, **kwargs)

    def call_method(self, node: Node, args: tuple, kwargs: dict) -> Any:
        return getattr(args[0], node.target)(*args[1:], **kwargs)

    def call_module(self, node: Node, args: tuple, kwargs: dict) -> Any:
        """An ad hoc call such as ``model.lm_head(h)``: it consumes no hook point. A hooked call
        (``hook=True``) is observed: the modules it runs serve their hook points (``Graph.hosted``)."""
        call = node.target
        module = self.modules[call.path]
        fn = getattr(module, call.method) if call.method else module
        observer = active()
        if observer is None or call.hook:
            return fn(*args, **kwargs)
        with suspended(observer):
            return fn(*args, **kwargs)

    def read(self, node: Node, args: tuple, kwargs: dict) -> Any:
        raise TypeError("a read has a value only while the forward runs")

    write = skip = grad = set_grad = read


class Runner(CallCounter, Evaluator):
    """Fires a schedule's nodes at their hook points during one forward (one method per opcode)."""

    def __init__(self, schedule: Schedule, modules: dict[str, nn.Module], batch_size: int = 1,
                 instrumented: frozenset = frozenset(), single_call: bool = False) -> None:
        # Operations inside an instrumented forward are hooked through their module's call.
        # Points of no module (a generation's streamer) are fired by the driver, not hooked.
        at = schedule.at
        owners = {module_of(p.path) for p in at}
        hooked = owners & modules.keys()
        # A forward that is one call of the root (``single_call``) returns the root's output: when
        # that is the root's only point, it is fired on the return value and the root is not hooked.
        self.fires_root = single_call and "" not in instrumented and ROOT_OUTPUT in at and (
            len(at) == 1 or not any(module_of(p.path) == "" for p in at if p != ROOT_OUTPUT))
        if self.fires_root:
            hooked.discard("")
        CallCounter.__init__(self, {id(modules[p]): p for p in hooked} if hooked else {},
                             frozenset(p for p in instrumented if module_of(p) in hooked) if instrumented
                             else instrumented)
        Evaluator.__init__(self, modules)
        self.schedule = schedule
        self.hooked = hooked
        self.env: dict[int, Any] = {}
        self.slot: Any = None  # the live value at the hook point being fired
        self.batch_size = batch_size
        self.skips: dict[tuple[str, int], list[tuple[tuple[int, int] | None, Any]]] = {}
        self.deltas: dict[Any, mx.array] = {}
        self.backward: Any = None  # the BackwardPass running, if any
        self.gslot: Any = None  # the cotangent at the gradient target being fired

    def run(self, forward: Callable[[], Any]) -> dict[int, Any]:
        if self.schedule.backward:
            return self._run_with_grad(forward)
        self._forward(forward)
        self._warn_unreached()
        return self.env

    def _forward(self, forward: Callable[[], Any]) -> None:
        self.counts.clear()
        for node in self.schedule.before:
            self._fire(node)
        if not (self.schedule.at or self.schedule.whole):
            return
        if not self.hooked:
            self._call(forward)
            return
        with observing([self.modules[p] for p in self.hooked], self):
            self._call(forward)

    def _call(self, forward: Callable[[], Any]) -> None:
        try:
            out = forward()
        except _StopForward:
            return
        if self.fires_root:  # the forward has returned: nothing is left to stop
            self._fire_at(ROOT_OUTPUT, out, self.schedule.at[ROOT_OUTPUT])

    def _run_with_grad(self, forward: Callable[[], Any]) -> dict[int, Any]:
        """The forward, then one backward per ``backward()`` of the trace, each its own gradient
        computation (nothing accumulates across them).

        Each pass runs the forward as a function of one zero perturbation per gradient target inside
        ``mx.value_and_grad``: a hook point's perturbation is added to the value the forward continues
        with, a node's to the node's value, so every target lies on the differentiated path. Right
        after it, the value passes an identity whose vector-Jacobian product fires the pass's nodes for
        that target on the cotangent arriving there (``grad`` reads it, ``set_grad`` replaces the
        cotangent that flows further back): a torch tensor hook, in MLX."""
        # The targets' real (batched, padded) shapes are known only by building the forward; MLX
        # builds it lazily, so this costs graph construction, not computation.
        self.shapes_only = True
        try:
            self._forward(forward)
        finally:
            self.shapes_only = False
        shapes = self.env
        carried: dict[int, Any] = {}  # what earlier passes computed (a later pass may use it)
        forward_env: dict[int, Any] = {}
        for backward in self.schedule.backward:
            keys = list(backward.at)
            # a structured value (a tuple output, a module's (args, kwargs)) is perturbed leaf by leaf
            zeros = [map_tree(self._target_value(shapes, key, backward), _zero_like) for key in keys]

            def loss_fn(deltas: list, backward=backward, keys=keys) -> tuple:
                self.env = dict(carried)
                self.deltas = dict(zip(keys, deltas))
                self.backward = backward
                self._forward(forward)
                forward_env.clear()
                forward_env.update(self.env)
                return self.env[backward.loss.index].sum(), [v for v in self.env.values() if isinstance(v, mx.array)]

            try:
                mx.value_and_grad(loss_fn)(zeros)
                for key, zero in zip(keys, zeros):
                    if any(n.index not in self.env for n in backward.at[key]):
                        self._backward_at(key, zero)  # the loss does not depend on it: a zero gradient
            finally:
                self.deltas, self.backward = {}, None
            carried.update((n.index, self.env[n.index]) for nodes in backward.at.values() for n in nodes)
        self.env = {**forward_env, **carried}
        self._warn_unreached()
        return self.env

    def _target_value(self, env: dict[int, Any], key: Any, backward: Any) -> Any:
        """The value a gradient target ``key`` differentiates with respect to, in ``env``."""
        node = next(n for n in backward.at[key] if n.op in ("grad", "set_grad")).args[0]
        return _follow(env[node.index], key[2]) if key[0] == "slot" else env[node.index]

    def _hooked(self, key: Any, value: Any) -> Any:
        """``value`` through an identity whose backward fires the nodes of ``key`` (see _run_with_grad)."""
        leaves = find_all(value, mx.array)
        if not leaves:
            return value

        @mx.custom_function
        def identity(*arrays: mx.array) -> tuple:
            return arrays

        @identity.vjp
        def fire(primals: tuple, cotangents: Any, outputs: tuple) -> tuple:
            cotangents = list(cotangents) if isinstance(cotangents, (tuple, list)) else [cotangents]
            edited = self._backward_at(key, _with_leaves(value, cotangents))
            return tuple(find_all(edited, mx.array))

        return _with_leaves(value, list(identity(*leaves)))

    def _backward_at(self, key: Any, cotangent: Any) -> Any:
        """Fire the current pass's nodes of ``key`` on ``cotangent``; the cotangent that flows on."""
        self.gslot = cotangent
        for node in self.backward.at[key] if self.backward is not None else ():
            self._fire(node)
        cotangent, self.gslot = self.gslot, None
        return cotangent

    def _warn_unreached(self) -> None:
        env = self.env
        missed = [p for p, nodes in self.schedule.at.items() for n in nodes if n.index not in env]
        if missed:
            missed = list(dict.fromkeys(missed))
            import warnings

            first = min(missed, key=lambda p: (p.call, p.path))
            warnings.warn(f"'{first}' was never reached: the run made fewer steps than the trace asked "
                          f"for ({len(missed)} hook point(s) missed); values from them are not returned",
                          UserWarning, stacklevel=4)

    # -- speculation: a generation building its next step before this step's token is known ------
    def effect_free(self) -> bool:
        """Whether firing any node of the schedule changes nothing but this run's values: no user
        function, foreign module, random draw or container mutation. Then a step fired and discarded
        (``mark``/``rollback``) leaves the run as if it had never been made."""
        return all(self._effect_free(node) for nodes in self.schedule.at.values() for node in nodes)

    def _effect_free(self, node: Node) -> bool:
        op, target = node.op, node.target
        if op in ("read", "write", "skip", "view", "put"):
            return True
        if op == "call_method":
            return target not in _MUTATORS
        if op == "call_function":
            flag = getattr(target, "pure", None)
            if flag is not None:
                return bool(flag)
            module = getattr(target, "__module__", None) or ""
            return module.startswith(_EFFECT_FREE_MODULES) and not module.startswith(_RANDOM_MODULES)
        if op == "call_module":
            module = self.modules.get(target.path)
            return not target.hook and module is not None and \
                type(module).__module__.startswith(("mlx.", "mlx_lm.", "mlxsight."))
        return False  # grad, set_grad

    def mark(self) -> tuple[int, dict[str, int]]:
        """The run's state now, for ``rollback``."""
        return len(self.env), dict(self.counts)

    def rollback(self, mark: tuple[int, dict[str, int]]) -> None:
        """Forget every node fired and module call counted since ``mark`` (nodes fire once a run)."""
        size, counts = mark
        for key in list(self.env)[size:]:
            del self.env[key]
        self.counts.clear()
        self.counts.update(counts)

    def fire_point(self, point: HookPoint, value: Any) -> Any:
        """Fire a point that no module call produces (a generation's final token ids)."""
        return self._at(point, value)

    def visit(self, path: str, call: int, body: Callable[[tuple, dict], Any], args: tuple, kwargs: dict) -> Any:
        args, kwargs = self._at(HookPoint(path, "input", call), (args, kwargs))
        replacements = self.skips.pop((path, call), None)
        out = body(args, kwargs) if replacements is None else assemble_skip(path, replacements, self.batch_size)
        return self._at(HookPoint(path, "output", call), out)

    def _at(self, point: HookPoint, value: Any) -> Any:
        nodes = self.schedule.at.get(point)
        if nodes is None:
            return value
        value = self._fire_at(point, value, nodes)
        if point == self.schedule.stop_after:
            raise _StopForward
        return value

    def _fire_at(self, point: HookPoint, value: Any, nodes: list[Node]) -> Any:
        """Fire ``nodes`` of ``point`` on its live ``value``; what the forward continues with."""
        # A gradient target here is perturbed where its value enters: the reads at this point and the
        # rest of the forward both see it, so d loss / d value counts every path to the loss (a loss
        # computed straight from a read included). Where the point is written, the target is what
        # flows on, perturbed after the writes.
        written = self.deltas and any(n.op in ("write", "put", "skip") for n in nodes)
        if self.deltas and not written:
            value = self._perturb_slot(point, value)
        outer, self.slot = self.slot, value  # a hooked call fired here serves its own points inside
        for node in nodes:
            self._fire(node)
        value, self.slot = self.slot, outer
        if written:
            value = self._perturb_slot(point, value)
        return value

    def _perturb_slot(self, point: HookPoint, value: Any) -> Any:
        for key, delta in self.deltas.items():
            if key[0] == "slot" and key[1] == point:
                value = _map_at(value, key[2], lambda v, k=key, d=delta: self._hooked(k, _perturbed(v, d)))
        return value

    def _fire(self, node: Node) -> None:
        if node.deps:
            env = self.env
            args = map_nodes(node.args, lambda n: env[n.index])
            kwargs = map_nodes(node.kwargs, lambda n: env[n.index])
        else:
            args, kwargs = node.args, node.kwargs
        try:
            value = getattr(self, node.op)(node, args, kwargs)
        except (TraceError, _StopForward):
            raise
        except Exception as e:
            error = IndexOutOfRangeError if isinstance(e, IndexError) else TraceError
            raise error(f"{type(e).__name__} while running the trace: {e}", node.where) from e
        key = ("node", node.index)
        delta = self.deltas.get(key) if self.deltas else None
        self.env[node.index] = value if delta is None else self._hooked(key, _perturbed(value, delta))

    # -- the opcodes that need the forward -------------------------------------------------------
    def read(self, node: Node, args: tuple, kwargs: dict) -> Any:
        return self.slot

    def write(self, node: Node, args: tuple, kwargs: dict) -> Any:
        self.slot = args[0]
        return args[0]

    def skip(self, node: Node, args: tuple, kwargs: dict) -> Any:
        point = node.target
        self.skips.setdefault((point.path, point.call), []).append((kwargs.get("rows"), args[0]))
        return args[0]

    # -- the opcodes that need the backward ------------------------------------------------------
    def grad(self, node: Node, args: tuple, kwargs: dict) -> Any:
        return _follow(self.gslot, _view_tail(node))

    def set_grad(self, node: Node, args: tuple, kwargs: dict) -> Any:
        self.gslot = _put_chain(self.gslot, _view_tail(node), args[2])
        return args[2]


def _follow(value: Any, items: tuple) -> Any:
    for spec in items:
        value = spec.get(value)
    return value


def _map_at(value: Any, items: tuple, fn: Callable[[Any], Any]) -> Any:
    """``value`` with the part that ``items`` reach inside it replaced by ``fn(part)``."""
    if not items:
        return fn(value)
    return items[0].put(value, _map_at(items[0].get(value), items[1:], fn))


def _put_chain(base: Any, specs: tuple, value: Any) -> Any:
    """``base`` with the view that ``specs`` reach replaced by ``value``."""
    return _map_at(base, specs, lambda _: value)


def _view_tail(node: Node) -> tuple:
    """The views of a gradient node's value beyond its target (its ``grad_key``)."""
    kind, _, chain = node.target
    return chain[len(grad_key(node)[2]):] if kind == "slot" else chain


def _with_leaves(value: Any, leaves: list) -> Any:
    """``value`` with its array leaves replaced, in order, by ``leaves``."""
    it = iter(leaves)
    return map_matching(value, mx.array, lambda _: next(it))


def _zero_like(leaf: Any) -> mx.array:
    """The zero perturbation of one leaf; a leaf that is not an array gets an unused scalar."""
    return mx.zeros(leaf.shape, leaf.dtype) if isinstance(leaf, mx.array) else mx.array(0.0)


def _perturbed(value: Any, delta: Any) -> Any:
    """``value + delta`` leaf by leaf (only array leaves change)."""
    if isinstance(value, mx.array):
        return value + delta
    return zip_tree(value, delta, lambda v, d: v + d if isinstance(v, mx.array) else v)
