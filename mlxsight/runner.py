"""Run a schedule inside one forward pass of the MLX model.

Only the modules the schedule names are hooked. At each hook point the runner fires that point's
nodes in recording order on the live value (``read`` takes it, ``write`` replaces it), and stops
the forward once the last needed point has fired: MLX is lazy, so nothing after it is built.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable

import mlx.core as mx
import mlx.nn as nn

from .compiler import Schedule, grad_key
from .errors import TraceError
from .graph import HookPoint, Node, map_nodes
from .hooks import active, observing, suspended
from .source import module_of
from .structure import call_instrumented
from .tree import zip_tree


class _NeverReached:
    def __repr__(self) -> str:
        return "<never reached>"


NEVER_REACHED = _NeverReached()  # a value from a hook point the run never made (e.g. after EOS)


class _StopForward(Exception):
    """Raised after the last needed hook point: the rest of the forward is not needed."""


def apply_op(op: str, target: Any, args: tuple, kwargs: dict, modules: dict[str, nn.Module]) -> Any:
    """Compute one pure node (everything but ``read``/``write``) on concrete or placeholder values."""
    if op == "view":
        return target.get(args[0])
    if op == "put":
        return target.put(args[0], args[1])
    if op == "call_function":
        return target(*args, **kwargs)
    if op == "call_method":
        return getattr(args[0], target)(*args[1:], **kwargs)
    if op == "call_module":
        path, method = target
        module = modules[path]
        fn = getattr(module, method) if method else module
        observer = active()
        if observer is None:
            return fn(*args, **kwargs)
        with suspended(observer):
            return fn(*args, **kwargs)
    raise ValueError(f"unknown opcode {op!r}")


class Runner:
    """Fires a schedule's nodes at their hook points during one forward."""

    def __init__(self, schedule: Schedule, modules: dict[str, nn.Module], batch_size: int = 1,
                 instrumented: frozenset = frozenset()) -> None:
        self.schedule = schedule
        self.modules = modules
        # Operations inside an instrumented forward are hooked through their module's call.
        self.hooked = {module_of(p) for p in schedule.hooked_paths}
        self.paths = {id(modules[p]): p for p in self.hooked}
        self.instrumented = instrumented & self.hooked
        self.source_stack: list[str] = []
        self.counts: dict[str, int] = defaultdict(int)
        self.env: dict[int, Any] = {}
        self.slot: Any = None
        self.suspended = 0
        self.batch_size = batch_size
        self.skips: dict[tuple[str, int], list[tuple[tuple[int, int] | None, Any]]] = {}
        self.deltas: dict[Any, mx.array] = {}
        self.grads: dict[Any, mx.array] = {}

    def run(self, forward: Callable[[], Any]) -> dict[int, Any]:
        if self.schedule.loss is not None:
            return self._run_with_grad(forward)
        self._forward(forward)
        self._warn_unreached()
        return self.env

    def _forward(self, forward: Callable[[], Any]) -> None:
        self.counts.clear()
        for node in self.schedule.before:
            self._fire(node)
        if self.schedule.at:
            modules = [self.modules[p] for p in self.hooked]
            with observing(modules, self):
                try:
                    forward()
                except _StopForward:
                    pass

    def _run_with_grad(self, forward: Callable[[], Any]) -> dict[int, Any]:
        """One forward and one backward: gradients w.r.t. activations via zero perturbations.

        d loss / d h equals d loss / d delta at delta = 0 for h + delta. The forward runs as a
        function of one zero array per gradient target inside ``mx.value_and_grad``: a hook point's
        delta is added to the value the forward continues with, a node's to the node's value."""
        schedule = self.schedule
        keys = [grad_key(g) for g in schedule.grad_targets]
        # The targets' real (batched, padded) shapes are known only by building the forward; MLX
        # builds it lazily, so this costs graph construction, not computation.
        self._forward(forward)
        shapes = [self.env[g.args[0].index] for g in schedule.grad_targets]
        zeros = [mx.zeros(v.shape, v.dtype) for v in shapes]
        forward_env: dict[Any, Any] = {}

        def loss_fn(deltas: list) -> tuple:
            self.env = {}
            self.deltas = dict(zip(keys, deltas))
            self._forward(forward)
            forward_env.clear()
            forward_env.update(self.env)
            return self.env[schedule.loss.index].sum(), [v for v in self.env.values() if isinstance(v, mx.array)]

        _, grads = mx.value_and_grad(loss_fn)(zeros)
        self.deltas = {}
        self.env = forward_env
        self.grads = dict(zip(keys, grads))
        for node in schedule.after:
            self._fire(node)
        self._warn_unreached()
        return self.env

    def _warn_unreached(self) -> None:
        missed = [p for p, nodes in self.schedule.at.items() if any(n.index not in self.env for n in nodes)]
        if missed:
            import warnings

            first = min(missed, key=lambda p: (p.call, p.path))
            warnings.warn(f"'{first}' was never reached: the run made fewer steps than the trace asked "
                          f"for ({len(missed)} hook point(s) missed); values from them are not returned",
                          UserWarning, stacklevel=4)

    def fire_point(self, point: HookPoint, value: Any) -> Any:
        """Fire a point that no module call produces (a generation's final token ids)."""
        return self._at(point, value)

    def call_module(self, module: nn.Module, call: Any, args: tuple, kwargs: dict) -> Any:
        path = self.paths.get(id(module))
        if path is None:
            return call(module, *args, **kwargs)
        n = self.counts[path]
        self.counts[path] += 1
        args, kwargs = self._at(HookPoint(path, "input", n), (args, kwargs))
        replacements = self.skips.pop((path, n), None)
        if replacements is not None:
            out = self._assemble(path, replacements)
        elif path in self.instrumented:
            out = call_instrumented(self, module, path, args, kwargs)
        else:
            out = call(module, *args, **kwargs)
        return self._at(HookPoint(path, "output", n), out)

    def call_op(self, path: str, fn: Any, args: tuple, kwargs: dict) -> Any:
        """One operation inside an instrumented forward: hook points around it, like a module."""
        n = self.counts[path]
        self.counts[path] += 1
        args, kwargs = self._at(HookPoint(path, "input", n), (args, kwargs))
        replacements = self.skips.pop((path, n), None)
        out = fn(*args, **kwargs) if replacements is None else self._assemble(path, replacements)
        return self._at(HookPoint(path, "output", n), out)

    def _assemble(self, path: str, replacements: list) -> Any:
        """One skip value for the whole batch: each invoke's rows, in row order."""
        if len(replacements) == 1 and (replacements[0][0] is None or replacements[0][0] == (0, self.batch_size)):
            return replacements[0][1]
        parts = sorted((rows, v) for rows, v in replacements if rows is not None)
        covered = [r for r, _ in parts]
        if any(rows is None for rows, _ in replacements) or covered[0][0] != 0 or covered[-1][1] != self.batch_size \
                or any(a[1] != b[0] for a, b in zip(covered, covered[1:])):
            raise ValueError(f"A batched `.skip()` has to cover every row: every invoke that adds rows must "
                             f"skip model.{path}")
        out = parts[0][1]
        for _, v in parts[1:]:
            out = zip_tree(out, v, lambda a, b: mx.concatenate([a, b], axis=0))
        return out

    def _at(self, point: HookPoint, value: Any) -> Any:
        nodes = self.schedule.at.get(point)
        if nodes is None:
            return value
        self.slot = value
        for node in nodes:
            self._fire(node)
        value, self.slot = self.slot, None
        delta = self.deltas.get(("slot", point)) if self.deltas else None
        if delta is not None:
            value = value + delta
        if point == self.schedule.stop_after:
            raise _StopForward
        return value

    def _fire(self, node: Node) -> None:
        if node.deps:
            args = map_nodes(node.args, lambda n: self.env[n.index])
            kwargs = map_nodes(node.kwargs, lambda n: self.env[n.index])
        else:
            args, kwargs = node.args, node.kwargs
        try:
            if node.op == "read":
                value = self.slot
            elif node.op == "write":
                value = self.slot = args[0]
            elif node.op == "grad":
                value = self.grads[grad_key(node)]
                for spec in node.target[2]:
                    value = spec.get(value)
            elif node.op == "skip":
                point, rows = node.target, node.kwargs.get("rows")
                value = args[0]
                self.skips.setdefault((point.path, point.call), []).append((rows, value))
            else:
                value = apply_op(node.op, node.target, args, kwargs, self.modules)
        except (TraceError, _StopForward):
            raise
        except Exception as e:
            raise TraceError(f"{type(e).__name__} while running the trace: {e}", node.where) from e
        delta = self.deltas.get(("node", node.index)) if self.deltas else None
        self.env[node.index] = value if delta is None else value + delta
