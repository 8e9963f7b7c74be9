"""Record-time values: a proxy used as a concrete Python value while its block still records.

``int(x)``, ``if x:``, ``x.item()`` need the value before the block ends. The graph recorded so
far runs as far as the value needs, on the rows of the invokes it depends on only where it can
(a trace whose every invoke asks for a value runs each invoke's rows once, not the whole batch each
time); the value is evaluated, and remembered: an edit recorded later that would have changed it
is refused when the whole graph compiles (``checks``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import mlx.core as mx

from .batching import invokes_needed, restrict
from .errors import Where, where_now
from .graph import Node

if TYPE_CHECKING:
    from .tracer import Tracer


class Materialized:
    """The values of one trace used as concrete values while it recorded."""

    def __init__(self, tracer: "Tracer") -> None:
        self.tracer = tracer
        self.values: list[tuple[Node, int, Where | None]] = []  # (node, graph length then, where)

    def value(self, node: Node) -> Any:
        """``node``'s value now, evaluated; remembered for ``checks``."""
        value = self._run_rows_of(node)
        mx.eval(value)
        self.values.append((node, len(self.tracer.graph), where_now()))
        return value

    def checks(self) -> list[tuple[Node, int, Where | None, frozenset]]:
        """Each value used as a concrete Python value, with the invokes whose later edits cannot
        change it: those with rows of their own other than its invoke's, as their rows were not in
        the batch it was computed on (nnsight runs each invoke's block on its own rows)."""
        if not self.values:
            return []
        own_rows = {i for i, invoke in enumerate(self.tracer._invokes) if invoke.rows is not None}
        return [(node, before, where, frozenset(own_rows - {node.invoke})) for node, before, where in self.values]

    def _run_rows_of(self, node: Node) -> Any:
        """``node``'s value, computed on the rows of the invokes it depends on only (each row as it
        is in the batch so far). The whole graph is still validated."""
        tracer = self.tracer
        invokes, batcher = tracer._invokes, tracer.batcher
        rows = {i: invoke.rows for i, invoke in enumerate(invokes) if invoke.rows is not None}
        plan = None
        if tracer.runs_parts and not tracer.scan and not tracer.model.whole_forward \
                and len(rows) == len(invokes) > 1 and batcher.separable():
            plan = invokes_needed(tracer.graph, node, rows)
        if plan is None or len(plan[0]) == len(invokes):
            return tracer.run_graph([node])[0]
        keep, needed = plan
        batch, held = batcher.part([invokes[i].data for i in sorted(keep)])
        moved = {i: batcher.rows_in(held, invokes[i].data) for i in keep}
        size = tracer.driver.rows(batch)
        structure = tracer.structure_for(batch)  # the same hook points, in the same order, as the whole batch
        compiler = tracer.driver.compiler
        compiler.compile(tracer.graph, structure, [node], self.checks(), tracer.stop_early)  # validates all
        graph, new = restrict(tracer.graph, needed, keep, rows, moved, size)
        schedule = compiler.compile(graph, structure, [new[node.index]], (), tracer.stop_early)
        return tracer.execute(schedule, [new[node.index]], batch, size)[0]
