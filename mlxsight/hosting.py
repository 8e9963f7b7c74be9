"""Hooked calls' hook points: ``model.sub(x, hook=True)`` inside a trace.

The modules a hooked call runs are observed while it records (on placeholders): their hook points
are learned then and *hosted* by the call's node (``graph.hosted``), so reads of them are served
when the call runs. Here: recording a hooked call, where its points come in the run, and how many
calls of a module the hooked calls recorded so far make.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Callable, Iterable

from .graph import Graph, HookPoint, Node
from .hooks import observing
from .structure import Structure, StructureRecorder


def record_hooked(graph: Graph, modules: dict[str, Any], watched: Iterable[str], record: Callable[[], Any]) -> Any:
    """``record()`` (recording the call's node) with ``modules`` (path -> MLX module) observed; the
    hook points they make are hosted by the node, their calls counted on from those of ``watched``
    that earlier hooked calls made."""
    structure = Structure()
    observer = StructureRecorder({id(m): p for p, m in modules.items()}, structure)
    observer.counts.update(hosted_calls(graph, watched))
    with observing(list(modules.values()), observer):
        proxy = record()
    for point in structure.order:
        graph.hosted[point] = (proxy.node, structure.skeletons[point])
    return proxy


def hook_order(graph: Graph, structure: Structure) -> dict[HookPoint, Any]:
    """Every hook point the run makes, by its position: the forward's and the hosted."""
    if not graph.hosted:
        return structure.order
    order = dict(structure.order)
    order.update((p, hosted_position(graph, p, structure)) for p in graph.hosted)
    return order


def hosted_position(graph: Graph, point: HookPoint, structure: Structure) -> Any:
    """Where a hosted point comes in the forward, as the compiler places it: just before the point
    its hooked call's arguments come from, after the points hosted there earlier."""
    order = structure.order

    def latest(node: Node, memo: dict) -> int | None:
        if node.index not in memo:
            if node.op == "read":
                memo[node.index] = order.get(node.target)
            else:
                found = [p for p in (latest(d, memo) for d in node.deps) if p is not None]
                memo[node.index] = max(found, default=None)
        return memo[node.index]

    memo: dict[int, Any] = {}
    host = graph.hosted[point][0]
    at = latest(host, memo) or 0
    earlier = [p for p, (h, _) in graph.hosted.items() if (latest(h, memo) or 0) == at]
    n = earlier.index(point) + 1
    return at - 1 + Fraction(n, n + 1)


def hosted_calls(graph: Graph, paths: Iterable[str]) -> dict[str, int]:
    """How many calls of each of ``paths`` the hooked calls recorded so far make."""
    counts: dict[str, int] = {}
    for point in graph.hosted:
        if point.path in paths and point.kind == "output":
            counts[point.path] = max(counts.get(point.path, 0), point.call + 1)
    return counts
