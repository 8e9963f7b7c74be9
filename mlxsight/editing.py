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
from .recorder import StopTrace
from .tracer import Tracer

if TYPE_CHECKING:
    from .model import NNsight


class EditTracer(Tracer):
    """Records an edit block; on exit stores its graph on the edited model instead of running it."""

    example_shapes = True  # recorded on an example input: indices are checked when a trace replays the edit
    runs_failed_edits = False  # nnsight stores an edit's body unrun: a failed one fails traces, not edits

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
        self.model._edits.append(self.graph)
        context.notify_exit({**self._frame.info, "edit": True}, {})  # nnsight counts an edit as a trace

    def compile_check(self) -> None:
        """Validate the edit (time travel, unknown modules) on the example input it was recorded with."""
        structure = self.driver.structure(self.batcher.batch())
        self.driver.compiler.compile(self.graph, structure, [], self.materialized.checks())


class FailedEdit:
    """An edit whose body raised: replaying it raises that error again (see ``EditTracer.__exit__``)."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def replay(self) -> None:
        raise self.error.with_traceback(None)


def shallow_copy(model: "NNsight") -> "NNsight":
    """A second envoy tree over the same module: edits stored on it leave ``model`` clean."""
    clone = copy.copy(model)
    object.__setattr__(clone, "_envoys", {})
    object.__setattr__(clone, "_root", clone)
    object.__setattr__(clone, "_aliases_bound", False)
    object.__setattr__(clone, "_edits", list(model._edits))
    return clone
