"""Building a trace's graph: module reads and writes, and edits replayed into a new trace."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .graph import Graph, Node, map_nodes

if TYPE_CHECKING:
    from .tracer import Tracer


def replay(tracer: "Tracer", edit: Graph) -> None:
    """Copy an edit's nodes into ``tracer``'s graph, wiring its reads and writes to the trace's slots."""
    new: dict[int, Node] = {}
    for node in edit:
        args, kwargs = map_nodes((node.args, node.kwargs), lambda n: new[n.index])
        if node.op == "read":
            new[node.index] = tracer._slot(node.target).node
        elif node.op == "write":
            slot = tracer._slot(node.target)
            slot._node = args[0]
            slot._version += 1
            new[node.index] = tracer.emit("write", node.target, args, kwargs, where=node.where)
        else:
            new[node.index] = tracer.emit(node.op, node.target, args, kwargs, where=node.where)
