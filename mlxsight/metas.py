"""What a recorded node's value looks like (structure, shape, dtype) while its block records.

Nothing is computed: each operation runs on placeholders (``runner.Evaluator``), which MLX never
evaluates. A value recorded before a later, longer invoke widened the batch is re-derived on the
batch as it is now (``rederive``) when it meets a wider one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import mlx.core as mx

from .batching import RowSlice
from .errors import TraceError, Where, where_now
from .graph import Node, format_node, map_nodes
from .proxy import UNKNOWN, Proxy, map_proxies
from .runner import Evaluator

if TYPE_CHECKING:
    from .tracer import Tracer

# What an operation raises on placeholders whose shapes do not fit (MLX's reshape, broadcast and
# matmul checks raise ValueError; an index past an axis, IndexError): re-derived on an older batch
# width, such a failure means "cannot be had that way", not a bug.
RESHAPE_ERRORS = (ValueError, IndexError)


class Metas:
    """One trace's node metas: placeholders through each recorded operation."""

    def __init__(self, tracer: "Tracer") -> None:
        self.tracer = tracer
        self._evaluator: Evaluator | None = None  # made on the first operation recorded on a proxy

    def _evaluate(self, node: Node, args: Any, kwargs: Any) -> Any:
        if self._evaluator is None:
            self._evaluator = Evaluator(self.tracer.driver.modules())
        return self._evaluator.evaluate(node, args, kwargs)

    def of(self, node: Node, args_kwargs: tuple, context: str, where: Where | None) -> Any:
        """The node's value on placeholders (``UNKNOWN`` where an input's is unknown)."""
        unknown: list = []
        metas = map_proxies(args_kwargs, lambda p: unknown.append(p) or p._meta if p._meta is UNKNOWN else p._meta)
        if any(p._meta is UNKNOWN for p in unknown):
            return UNKNOWN
        if isinstance(node.target, RowSlice):  # the batch size is only known at exit
            return metas[0][0] if node.op == "put" else UNKNOWN
        try:
            return self._evaluate(node, metas[0], metas[1])
        except TraceError:
            raise
        except Exception as e:
            rederived = self.rederive(node)  # an input recorded before a longer invoke widened the batch
            if rederived is not UNKNOWN:
                return rederived
            if isinstance(e, IndexError):
                if self.tracer.example_shapes:  # an index past an edit's example input: checked when it runs
                    return UNKNOWN
                raise
            what = context or f"recording `{format_node(node)}`"
            raise TraceError(f"{type(e).__name__} while {what}: {e}", where) from e

    def rederive(self, node: Node) -> Any:
        """``node``'s meta on the batch as it is now (``UNKNOWN`` if it cannot be had that way).

        An invoke's values are as wide as the batch was when they were recorded; nnsight pads every
        invoke's rows to the whole batch, so a later, longer invoke widens the values of earlier
        ones. Their metas are re-derived from the hook points on demand, when a shorter one meets a
        wider one (a write, an operation between invokes)."""
        tracer = self.tracer
        if not tracer.batcher.datas:
            return UNKNOWN
        batch = tracer.batcher.batch()
        structure, size = tracer.structure_for(batch), tracer.driver.rows(batch)
        needed, stack = set(), [node]
        while stack:
            n = stack.pop()
            if n.index not in needed:
                needed.add(n.index)
                stack.extend(n.inputs())
        metas: dict[int, Any] = {}
        try:
            for n in (tracer.graph.nodes[i] for i in sorted(needed)):
                args, kwargs = map_nodes((n.args, n.kwargs), lambda d: metas[d.index])
                if n.op == "read":
                    value = structure.meta(n.target)
                elif n.op in ("view", "put") and isinstance(n.target, RowSlice):
                    spec = RowSlice(n.target.start, n.target.stop, size)
                    value = spec.get(args[0]) if n.op == "view" else spec.put(args[0], args[1])
                elif n.op in ("call_function", "call_method", "call_module", "view", "put"):
                    value = self._evaluate(n, args, kwargs)
                else:
                    return UNKNOWN
                metas[n.index] = value
        except RESHAPE_ERRORS:
            return UNKNOWN
        return metas[node.index]


def check_same_shape(label: str, current: Any, value: Proxy) -> None:
    """Refuse to replace ``current`` (a module value, a gradient) by a ``value`` of another shape."""
    a = getattr(current, "_meta", UNKNOWN)
    b = value._meta
    if _same_shape(a, b):
        return
    if isinstance(current, Proxy):  # recorded on a narrower batch than the other: both as they are now
        wide_a, wide_b = current._recorder.metas.rederive(current.node), value._recorder.metas.rederive(value.node)
        if _same_shape(wide_a, wide_b) and isinstance(wide_b, mx.array):
            current._meta, value._meta = wide_a, wide_b
            return
    if isinstance(a, mx.array) and isinstance(b, mx.array):
        raise TraceError(f"shape mismatch assigning to {label}: it has shape {tuple(a.shape)}, "
                         f"the new value has shape {tuple(b.shape)}", where_now())


def _same_shape(a: Any, b: Any) -> bool:
    return not (isinstance(a, mx.array) and isinstance(b, mx.array)) or tuple(a.shape) == tuple(b.shape)
