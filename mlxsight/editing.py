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
        try:
            invoke = self.invoke(*self.driver.edit_example())
            self._implicit = True
            invoke.rows = None  # edits address the whole batch, whatever its rows
            self.recorder.invokes.append(invoke)
        except BaseException:
            self._close()
            raise
        return self if self.inplace else (self, self.target)

    def _finish(self) -> None:
        self.compile_check()
        self.model._edits.append(self.graph)
        context.notify_exit({**self._frame.info, "edit": True}, {})  # nnsight counts an edit as a trace

    def compile_check(self) -> None:
        """Validate the edit (time travel, unknown modules) on the example input it was recorded with."""
        structure = self.driver.structure(self.batcher.batch())
        self.driver.compiler.compile(self.graph, structure, [], self._materialized)


def shallow_copy(model: "NNsight") -> "NNsight":
    """A second envoy tree over the same module: edits stored on it leave ``model`` clean."""
    clone = copy.copy(model)
    object.__setattr__(clone, "_envoys", {})
    object.__setattr__(clone, "_root", clone)
    object.__setattr__(clone, "_aliases_bound", False)
    object.__setattr__(clone, "_edits", list(model._edits))
    return clone
