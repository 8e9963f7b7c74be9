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
from fractions import Fraction
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from .aliasing import Item
from . import context
from .errors import ModuleNotCalledError, OutOfOrderError, TraceError, Where
from .graph import POINT_OPS, Graph, HookPoint, Node
from .structure import Structure


@dataclass
class BackwardPass:
    """One ``backward()`` of a trace: its loss, and per gradient target (a ``grad_key``) the nodes
    that fire when the backward's cotangent reaches that target, in recording order. A ``set_grad``
    among them changes the cotangent that flows on, as a torch tensor hook returning a new grad."""

    loss: Node
    at: dict[Any, list[Node]] = field(default_factory=dict)


@dataclass
class Schedule:
    before: list[Node] = field(default_factory=list)  # nodes that need no value from the forward
    at: dict[HookPoint, list[Node]] = field(default_factory=dict)
    backward: list[BackwardPass] = field(default_factory=list)  # one per backward(), in recording order
    stop_after: HookPoint | None = None
    whole: bool = False  # run the whole forward even with nothing to compute (it is observed)

    @property
    def hooked_paths(self) -> set[str]:
        return {p.path for p in self.at}

    def indices(self) -> tuple:
        """This schedule with node indices for nodes: what another graph of the same shape reuses."""
        ids = lambda nodes: [n.index for n in nodes]  # noqa: E731
        passes = [(b.loss.index, {k: ids(ns) for k, ns in b.at.items()}) for b in self.backward]
        return ids(self.before), {p: ids(ns) for p, ns in self.at.items()}, passes, self.stop_after, self.whole

    @classmethod
    def from_indices(cls, indices: tuple, graph: Graph) -> "Schedule":
        before, at, passes, stop_after, whole = indices
        nodes = graph.nodes
        backward = [BackwardPass(nodes[loss], {k: [nodes[i] for i in ids] for k, ids in targets.items()})
                    for loss, targets in passes] if passes else []
        return cls([nodes[i] for i in before], {p: [nodes[i] for i in ids] for p, ids in at.items()}, backward,
                   stop_after, whole)


class Compiler:
    """Compiles graphs into schedules, remembering the last ``size`` by graph shape."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self.cache: OrderedDict = OrderedDict()
        self.lock = threading.Lock()
        self.hits = self.misses = 0

    def compile(self, graph: Graph, structure: Structure, outputs: list[Node],
                materialized: list[tuple[Node, int, Where | None, frozenset]] = (), stop_early: bool = True,
                whole: bool = False) -> Schedule:
        key = (tuple(graph.shape), tuple([(p, n.index) for p, (n, _) in graph.hosted.items()]) if graph.hosted else (),
               tuple([n.index for n in outputs]),
               tuple([(n.index, before, apart) for n, before, _, apart in materialized]) if materialized else (),
               stop_early, context.settings.relaxed_order, whole)  # the order checks differ
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
                  materialized: list[tuple[Node, int, Where | None, frozenset]] = (), stop_early: bool = True,
                  whole: bool = False) -> Schedule:
    """The schedule computing ``outputs``; with ``whole``, every write and skip too and the
    forward runs to its end even with no output (something outside observes it)."""
    order = structure.order
    hosts: dict[int, list[HookPoint]] = {}  # a hooked call node -> the points it hosts
    for point, (host, _) in graph.hosted.items():
        hosts.setdefault(host.index, []).append(point)
    if hosts:
        order = dict(order)
    under: dict[Any, int] = {}  # per forward position: how many hosted points sit just before it
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
        for point in hosts.get(node.index, ()):
            # A hooked call runs while the forward is at its arguments' latest point: the points it
            # hosts come after the point before that one, and before that point's value reaches
            # later readers (as nnsight serves them while the worker calling it is at the point).
            at = order[latest[0]] if latest is not None else 0
            n = under[at] = under.get(at, 0) + 1
            order[point] = at - 1 + Fraction(n, n + 1)

    _check_materialized(graph, order, origin, materialized)
    _check_skipped(graph)
    backward = _backward_positions(graph, order, origin)

    rank = lambda n: order[origin[n.index][0]] if origin.get(n.index) else -1  # noqa: E731
    horizon = max(order.values(), default=-1) if whole else max((rank(n) for n in outputs), default=-1)
    needed: set[int] = set()
    stack = list(outputs) + [n for n in graph if n.op in ("write", "skip") and order[n.target] <= horizon]
    while stack:
        while stack:
            node = stack.pop()
            if node.index not in needed:
                needed.add(node.index)
                stack.extend(node.inputs())
                if node.op in POINT_OPS and node.target in graph.hosted:
                    stack.append(graph.hosted[node.target][0])  # its value exists only if the call runs
        # a gradient edit matters to every later read of its backward pass
        losses = {n.args[1].index for n in graph if n.op == "grad" and n.index in needed}
        stack = [n for n in graph if n.op == "set_grad" and n.index not in needed and n.args[1].index in losses]

    schedule = Schedule(whole=whole)
    passes: dict[int, BackwardPass] = {}
    for node in graph:
        if node.index not in needed:
            continue
        o = origin[node.index]
        if node.index in backward:
            loss, _, key = backward[node.index]
            if loss.index not in passes:
                passes[loss.index] = BackwardPass(loss)
                schedule.backward.append(passes[loss.index])
            passes[loss.index].at.setdefault(key, []).append(node)
        elif o is None:
            schedule.before.append(node)
        else:
            schedule.at.setdefault(o[0], []).append(node)
    if schedule.at and stop_early:
        schedule.stop_after = max(schedule.at, key=order.__getitem__)
    return schedule


def _check_materialized(graph: Graph, order, origin, materialized) -> None:
    """No edit recorded after a value was used concretely may change it; edits from the invokes in
    ``apart`` (a later invoke's own rows) cannot."""
    writes = [n for n in graph if n.op == "write"] if materialized else []
    for node, recorded_before, where, apart in materialized:
        o = origin.get(node.index)
        if o is None:
            continue
        for later in writes:
            if later.index >= recorded_before and later.invoke not in apart and order[later.target] <= order[o[0]]:
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
    """What a ``grad`` or ``set_grad`` node differentiates with respect to: a hook point's value (the array the
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


def _backward_positions(graph: Graph, order, origin) -> dict[int, tuple[Node, tuple, Any]]:
    """Where each node of a backward pass fires: ``(loss, position, key)`` per node index. A
    ``grad``/``set_grad`` node fires when its pass's cotangent reaches its target; a node computed
    from gradients fires with the last of them the backward reaches (of the last pass). Checks each
    gradient's target and nnsight's order: within a pass gradients are requested from the loss back
    (reads may opt out with ``relaxed_order``: their values do not depend on it; edits may not)."""
    passes: dict[int, int] = {}  # loss node index -> pass number, in recording order
    positions: dict[int, tuple[Node, tuple, Any]] = {}
    reached: dict[int, tuple] = {}  # per pass: the furthest backward position a gradient was read at
    for node in graph:
        found = [positions[d.index] for d in node.deps if d.index in positions]
        if node.op in ("grad", "set_grad"):
            target, loss = node.args[:2]
            t, l = origin.get(target.index), origin.get(loss.index)
            if t is None or l is None or order[t[0]] > order[l[0]]:
                raise TraceError(
                    "this .grad is of a value the loss does not depend on (it is not computed by the forward "
                    "before the loss)", node.where, loss.where)
            number = passes.setdefault(loss.index, len(passes))
            own = (loss, (number, -order[t[0]]), grad_key(node))
            later = max(found, key=lambda p: p[1], default=None)
            if node.op == "set_grad":
                furthest = reached.get(number)
                if later is not None and later[1] > own[1] or furthest is not None and furthest[0] > own[1]:
                    other = later[2] if later is not None and later[1] > own[1] else furthest[1]
                    raise OutOfOrderError(
                        f"this gradient edit comes after a gradient the backward pass only reaches later "
                        f"({_describe_key(other)}): within a backward, gradients are reached from the loss "
                        f"back, so read and set them in that order (as nnsight requires)", node.where)
            else:
                furthest = reached.get(number)
                if furthest is None or furthest[0] < own[1]:
                    reached[number] = (own[1], own[2])
                elif furthest[0] > own[1] and not context.settings.relaxed_order:
                    raise OutOfOrderError(
                        f"this gradient is requested after {_describe_key(furthest[1])}, which the backward "
                        f"pass reaches later: gradients flow from the loss back, so request them in reverse "
                        f"forward order (as nnsight requires), or opt in with mlxsight.set_relaxed_order(True)",
                        node.where)
            positions[node.index] = own
        elif found:
            positions[node.index] = max(found, key=lambda p: p[1])
    return positions


def _describe_key(key: Any) -> str:
    return f"the gradient at '{key[1]}'" if key[0] == "slot" else f"the gradient of node %{key[1]}"
