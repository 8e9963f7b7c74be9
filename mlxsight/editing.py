"""Persistent edits: interventions recorded once and replayed first in every later trace.

``with model.edit() as (tracer, edited):`` records on a copy of the model (``model`` stays clean);
``with model.edit(inplace=True) as tracer:`` records on the model itself. Nothing runs: the edit's
graph is stored and copied into the graph of each later trace before the trace's own nodes, on
the whole batch, as nnsight replays stored edits before the invokes.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from . import context
from .graph import POINT_OPS, Graph, HookPoint, Node, map_nodes
from .hosting import hosted_calls
from .recorder import StopTrace
from .tracer import Tracer

if TYPE_CHECKING:
    from .model import NNsight
    from .recorder import Recorder


class EditTracer(Tracer):
    """Records an edit block; on exit stores its graph on the edited model instead of running it."""

    example_shapes = True  # recorded on an example input: indices are checked when a trace replays the edit
    runs_failed_edits = False  # nnsight stores an edit's body unrun: a failed one fails traces, not edits
    interleaves_invokes = False  # an edit's body is stored and replayed inside traces: it records inline

    def __init__(self, model: "NNsight", inplace: bool) -> None:
        self.target = model if inplace else shallow_copy(model)
        self.inplace = inplace
        super().__init__(self.target, (), {})

    def __enter__(self) -> Any:
        super().__enter__()
        try:
            invoke = self.invoke(*self.driver.edit_example())
            self._implicit = True
            invoke.rows = None  # edits address the whole batch, whatever its rows
            self.recorder.invokes.append(invoke)
        except BaseException:
            self._close()
            raise
        self._bound = self if self.inplace else (self, self.target)  # what `with ... as` binds
        return self._bound

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if not isinstance(exc, Exception) or isinstance(exc, StopTrace):
            return super().__exit__(exc_type, exc, tb)
        # nnsight stores an edit's body unrun and runs it inside each later trace, so a body that
        # fails (a module the model lacks, an index past its layers) fails those traces, not the
        # edit: the error is stored as the edit and raised by every trace that replays it.
        self._frame.revert(keep=(self, self.target, self._bound))  # the body did not run, as far as the caller can tell
        self._close()
        self.model._edits.append(FailedEdit(exc))
        context.notify_exit({**self._frame.info, "edit": True}, {})
        return True

    def _finish(self) -> None:
        self.compile_check()
        self.model._edits.append(StoredEdit(self.graph))
        context.notify_exit({**self._frame.info, "edit": True}, {})  # nnsight counts an edit as a trace

    def compile_check(self) -> None:
        """Validate the edit (time travel, unknown modules) on the example input it was recorded with."""
        structure = self.driver.structure(self.batcher.batch())
        self.driver.compiler.compile(self.graph, structure, [], self.materialized.checks())


class StoredEdit:
    """A recorded edit: its graph, copied into each later trace's graph before the trace's own nodes."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph

    def replay(self, tracer: Tracer) -> None:
        """Copy the edit's nodes into ``tracer``'s graph, wiring its reads and writes to the trace's
        slots. The body of an open ``tracer.iter[:]`` loop in the edit is copied again for each later
        step the run makes, as nnsight's edit runs its loop at every step."""
        recorder, edit, steps = tracer.recorder, self.graph, tracer.edit_steps()
        placed: dict[HookPoint, HookPoint] = {}
        new = _copy(recorder, edit, edit.nodes, {}, 0, placed)
        for start, end, step in edit.open_loops:
            for later in range(step + 1, steps):
                _copy(recorder, edit, edit.nodes[start:end], dict(new), later - step, placed)


def _copy(recorder: "Recorder", edit: Graph, nodes: list[Node], new: dict[int, Node], later: int,
          placed: dict[HookPoint, HookPoint]) -> dict[int, Node]:
    """Copy ``nodes`` of ``edit`` (``new``: the copies of its nodes so far, by index), their hook
    points ``later`` calls on; the points their hooked calls host follow those hosted here."""
    graph = recorder.graph
    indices = {n.index for n in nodes}
    own = [p for p, (host, _) in edit.hosted.items() if host.index in indices]
    first: dict[str, int] = {}
    for point in own:
        first[point.path] = min(first.get(point.path, point.call), point.call)
    shift = hosted_calls(graph, first)
    for point in own:
        placed[point] = point._replace(call=point.call - first[point.path] + shift.get(point.path, 0))
    hosted = set(own)

    def moved(point: HookPoint) -> HookPoint:
        if point in hosted or point in edit.hosted:
            return placed[point]
        return point._replace(call=point.call + later) if later else point

    for node in nodes:
        args, kwargs = map_nodes((node.args, node.kwargs), lambda n: new[n.index])
        target = moved(node.target) if node.op in POINT_OPS else node.target
        if node.op == "read":
            new[node.index] = recorder.slot(target).node
        elif node.op == "write":
            new[node.index] = recorder.rewrite(target, args, kwargs, node.where)
        else:
            new[node.index] = recorder.emit(node.op, target, args, kwargs, where=node.where)
    for point in own:
        graph.hosted[placed[point]] = (new[edit.hosted[point][0].index], edit.hosted[point][1])
    return new


class FailedEdit:
    """An edit whose body raised: replaying it raises that error again (see ``EditTracer.__exit__``)
    in a trace, not while recording another edit (nnsight stores an edit's body unrun)."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def replay(self, tracer: Tracer) -> None:
        if tracer.runs_failed_edits:
            raise self.error.with_traceback(None)


def shallow_copy(model: "NNsight") -> "NNsight":
    """A second envoy tree over the same module: edits stored on it leave ``model`` clean."""
    clone = copy.copy(model)
    object.__setattr__(clone, "_envoys", {})
    object.__setattr__(clone, "_root", clone)
    object.__setattr__(clone, "_aliases_bound", False)
    object.__setattr__(clone, "_edits", list(model._edits))
    return clone
