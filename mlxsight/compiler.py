"""Compile a graph into a schedule: which nodes fire at which hook point of the forward.

Each node fires at the earliest hook point where all its inputs exist (the latest point among
them). Validation happens here, with the user's lines: a value written into an earlier point than
the one it comes from (time travel), an edit of a value already handed to Python as a concrete
value. Only nodes that saved values depend on are kept, and the forward stops after the last hook
point any of them needs.

A ``Compiler`` keeps the schedules it made, keyed by the graph's shape (opcodes, hook points and
dependencies, not constants), so a loop of identical traces compiles and validates once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from .aliasing import Item
from .errors import ModuleNotCalledError, OutOfOrderError, TraceError, Where
from .graph import Graph, HookPoint, Node
from .structure import Structure


@dataclass
class Schedule:
    before: list[Node] = field(default_factory=list)  # nodes that need no value from the forward
    at: dict[HookPoint, list[Node]] = field(default_factory=dict)
    after: list[Node] = field(default_factory=list)  # gradients, and what is computed from them
    stop_after: HookPoint | None = None
    loss: Node | None = None
    grad_targets: list[Node] = field(default_factory=list)
    whole: bool = False  # run the whole forward even with nothing to compute (it is observed)

    @property
    def hooked_paths(self) -> set[str]:
        return {p.path for p in self.at}

    def indices(self) -> tuple:
        """This schedule with node indices for nodes: what another graph of the same shape reuses."""
        ids = lambda nodes: [n.index for n in nodes]  # noqa: E731
        return (ids(self.before), {p: ids(ns) for p, ns in self.at.items()}, ids(self.after), self.stop_after,
                None if self.loss is None else self.loss.index, ids(self.grad_targets), self.whole)

    @classmethod
    def from_indices(cls, indices: tuple, graph: Graph) -> "Schedule":
        before, at, after, stop_after, loss, grads, whole = indices
        nodes = graph.nodes
        pick = lambda ids: [nodes[i] for i in ids]  # noqa: E731
        return cls(pick(before), {p: pick(ids) for p, ids in at.items()}, pick(after), stop_after,
                   None if loss is None else nodes[loss], pick(grads), whole)


class Compiler:
    """Compiles graphs into schedules, remembering the last ``size`` by graph shape."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self.cache: OrderedDict = OrderedDict()
        self.lock = threading.Lock()
        self.hits = self.misses = 0

    def compile(self, graph: Graph, structure: Structure, outputs: list[Node],
                materialized: list[tuple[Node, int, Where | None]] = (), stop_early: bool = True,
                whole: bool = False) -> Schedule:
        key = (tuple(graph.shape), tuple(n.index for n in outputs),
               tuple((n.index, before) for n, before, _ in materialized), stop_early, whole)
        with self.lock:
            entry = self.cache.get(key)
            if entry is not None and entry[0] is structure:
                self.cache.move_to_end(key)
                self.hits += 1
                return Schedule.from_indices(entry[1], graph)
        schedule = compile_graph(graph, structure, outputs, materialized, stop_early, whole)
        with self.lock:
            self.misses += 1
            self.cache[key] = (structure, schedule.indices())
            if len(self.cache) > self.size:
                self.cache.popitem(last=False)
        return schedule


def compile_graph(graph: Graph, structure: Structure, outputs: list[Node],
                  materialized: list[tuple[Node, int, Where | None]] = (), stop_early: bool = True,
                  whole: bool = False) -> Schedule:
    """The schedule computing ``outputs``; with ``whole``, every write and skip too and the
    forward runs to its end even with no output (something outside observes it)."""
    order = structure.order
    # For each node: the latest hook point it depends on, and the node that reads it there.
    origin: dict[int, tuple[HookPoint, Node] | None] = {}
    for node in graph:
        latest = None
        for dep in node.inputs():
            o = origin[dep.index]
            if o is not None and (latest is None or order[o[0]] > order[latest[0]]):
                latest = o
        if node.op in ("read", "write", "skip"):
            point = node.target
            if point not in order:
                name = point.label()
                raise ModuleNotCalledError(f"{name} is never reached by this forward", node.where)
            if node.op != "read" and latest is not None and order[latest[0]] > order[point]:
                raise OutOfOrderError(
                    f"'{point}' is set from a value of '{latest[0]}', which the forward only reaches "
                    f"later (a value from later in the forward cannot flow back)", node.where, latest[1].where)
            origin[node.index] = (point, node)
        else:
            origin[node.index] = latest

    _check_materialized(graph, order, origin, materialized)
    _check_skipped(graph)
    after = _after_backward(graph, order, origin)

    rank = lambda n: order[origin[n.index][0]] if origin.get(n.index) else -1  # noqa: E731
    horizon = max(order.values(), default=-1) if whole else max((rank(n) for n in outputs), default=-1)
    needed: set[int] = set()
    stack = list(outputs) + [n for n in graph if n.op in ("write", "skip") and order[n.target] <= horizon]
    while stack:
        node = stack.pop()
        if node.index not in needed:
            needed.add(node.index)
            stack.extend(node.inputs())

    schedule = Schedule(whole=whole)
    for node in graph:
        if node.index not in needed:
            continue
        o = origin[node.index]
        if node.index in after:
            schedule.after.append(node)
            if node.op == "grad":
                schedule.loss = node.args[1]
                key = grad_key(node)
                if key not in [grad_key(g) for g in schedule.grad_targets]:
                    schedule.grad_targets.append(node)
        elif o is None:
            schedule.before.append(node)
        else:
            schedule.at.setdefault(o[0], []).append(node)
    if schedule.at and stop_early:
        schedule.stop_after = max(schedule.at, key=order.__getitem__)
    return schedule


def _check_materialized(graph: Graph, order, origin, materialized) -> None:
    for node, recorded_before, where in materialized:
        o = origin.get(node.index)
        if o is None:
            continue
        for later in graph.nodes[recorded_before:]:
            if later.op == "write" and order[later.target] <= order[o[0]]:
                raise OutOfOrderError(
                    f"this edit of '{later.target}' would change a value that was already used as a "
                    f"concrete Python value", later.where, where)


def _check_skipped(graph: Graph) -> None:
    """A skipped module's body never runs: nothing inside it can be read or written."""
    skipped = {(n.target.path, n.target.call): n for n in graph if n.op == "skip"}
    if not skipped:
        return
    for node in graph:
        if node.op in ("read", "write", "skip"):
            for (path, call), skip in skipped.items():
                if node.target.path.startswith(path + ".") if path else node.target.path:
                    raise OutOfOrderError(
                        f"'{node.target}' is inside {HookPoint(path, 'output', call).module}, "
                        f"which is skipped, so it is never reached", node.where, skip.where)


def grad_key(node: Node) -> Any:
    """What a ``grad`` node differentiates with respect to: a hook point's value (the array the
    leading element lookups of its view chain reach, e.g. ``.input`` in ``(args, kwargs)``), or a node."""
    kind, point, chain = node.target
    if kind != "slot":
        return ("node", node.args[0].index)
    return ("slot", point, grad_items(chain))


def grad_items(chain: tuple) -> tuple:
    """The leading element lookups (``Item``) of a view chain: the path to an array in a tree."""
    items = []
    for spec in chain:
        if not isinstance(spec, Item):
            break
        items.append(spec)
    return tuple(items)


def _after_backward(graph: Graph, order, origin) -> set[int]:
    """Nodes that need gradients: they run after the backward pass. Checks each ``.grad``."""
    after: set[int] = set()
    for node in graph:
        if node.op == "grad":
            target, loss = node.args
            t, l = origin.get(target.index), origin.get(loss.index)
            if t is None or l is None or order[t[0]] > order[l[0]]:
                raise TraceError(
                    "this .grad is of a value the loss does not depend on (it is not computed by the forward "
                    "before the loss)", node.where, loss.where)
            after.add(node.index)
        elif any(d.index in after for d in node.deps):
            after.add(node.index)
    return after
