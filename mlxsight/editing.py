"""Persistent edits: interventions recorded once and replayed first in every later trace.

``with model.edit() as (tracer, edited):`` records on a copy of the model (``model`` stays clean);
``with model.edit(inplace=True) as tracer:`` records on the model itself. Nothing runs: the edit's
graph is stored and copied into the graph of each later trace before the trace's own nodes, on
the whole batch, as nnsight replays stored edits before the invokes.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from .graph import Graph, Node, map_nodes
from .tracer import Tracer

if TYPE_CHECKING:
    from .model import NNsight


class EditTracer(Tracer):
    """Records an edit block; on exit stores its graph on the edited model instead of running it."""

    def __init__(self, model: "NNsight", inplace: bool) -> None:
        self.target = model if inplace else shallow_copy(model)
        self.inplace = inplace
        super().__init__(self.target, (), {})

    def __enter__(self) -> Any:
        super().__enter__()
        invoke = self.invoke(*self.model._edit_example())
        self._implicit = True
        self._example = invoke.data
        invoke.rows = None  # edits address the whole batch, whatever its rows
        self._invoke_stack.append(invoke)
        return self if self.inplace else (self, self.target)

    def _row_data(self) -> list:
        return [self._example]

    def _finish(self) -> None:
        self.compile_check()
        self.model._edits.append(self.graph)
        from .tracer import _exit_listeners

        info = {"file": self._frame.f_code.co_filename if self._frame else None,
                "line": self._frame.f_lineno if self._frame else None, "edit": True}
        for listener in _exit_listeners:  # an edit is a traced block too (nnsight counts it)
            listener(info, {})

    def compile_check(self) -> None:
        """Validate the edit (time travel, unknown modules) on the example input it was recorded with."""
        from .compiler import compile_graph

        structure = self.model._structure(self._batch_of(self._row_data()))
        compile_graph(self.graph, structure, [], self._materialized)


def shallow_copy(model: "NNsight") -> "NNsight":
    """A second envoy tree over the same module: edits stored on it leave ``model`` clean."""
    clone = copy.copy(model)
    object.__setattr__(clone, "_envoys", {})
    object.__setattr__(clone, "_root", clone)
    object.__setattr__(clone, "_aliases_bound", False)
    object.__setattr__(clone, "_edits", list(model._edits))
    object.__setattr__(clone, "_structures", OrderedDict())
    return clone


def replay(tracer: Tracer, edit: Graph) -> None:
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
