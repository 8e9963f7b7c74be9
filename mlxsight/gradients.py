"""Gradients while recording: ``loss.backward()``, ``x.grad`` reads, ``x.grad = g`` and in-place
edits of a gradient, as ``grad``/``set_grad`` nodes of the graph.

Each ``backward()`` is its own pass (gradients do not accumulate across them); a ``.grad`` belongs
to the latest. Made on a trace's first gradient only: a plain trace pays nothing for it.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, NamedTuple

import mlx.core as mx

from .errors import TraceError, where_now
from .graph import HookPoint, Node
from .metas import check_same_shape
from .proxy import NodeRef, Proxy

if TYPE_CHECKING:
    from .recorder import Recorder


class GradBind(NamedTuple):
    """What a ``.grad`` proxy's in-place edits reach: that gradient, in that backward pass. Called
    with the edited proxy (``Proxy._assign`` calls a callable bind) it records the new gradient."""

    target: tuple
    dep: Node
    loss: Node

    def __call__(self, proxy: Proxy) -> None:
        proxy._recorder.record("set_grad", self.target, (NodeRef(self.dep), NodeRef(self.loss), proxy),
                               meta=proxy._meta)


class Gradients:
    """One trace's backward passes, recorded."""

    def __init__(self, recorder: "Recorder") -> None:
        self.recorder = recorder
        self.loss: Node | None = None  # the latest backward pass's loss

    def set_loss(self, loss: Proxy, gradient: Any = None) -> None:
        """``loss.backward()``: later ``.grad`` reads and writes belong to this loss's backward pass."""
        if gradient is not None:
            loss = (loss * gradient).sum()
        elif isinstance(loss._meta, mx.array) and loss._meta.size != 1:
            raise TraceError("backward() needs a scalar loss (or gradient=...), got shape "
                             f"{tuple(loss._meta.shape)}", where_now())
        self.loss = loss.node

    def _target(self, proxy: Proxy) -> tuple[tuple, Node]:
        """What ``proxy.grad`` differentiates with respect to: for a module value (or a view of one)
        the value the forward continues with at the hook point, narrowed by the views; else the node."""
        if self.loss is None:
            raise TraceError("read .grad after calling backward() on a loss in this trace", where_now())
        chain, root = [], proxy
        while root._view is not None:
            base, spec, _ = root._view
            chain.append(spec)
            root = base
        points = [b for b in root._binds if isinstance(b, HookPoint)]
        if points:
            dep = next(n for n in self.recorder.graph.nodes if n.op == "read" and n.target == points[0])
            return ("slot", points[0], tuple(reversed(chain))), dep
        return ("node", None, ()), proxy.node

    def grad_of(self, proxy: Proxy) -> Proxy | None:
        """A proxy for d(loss)/d(proxy) in the latest backward pass; ``None`` before any
        ``backward()``, as nnsight gives there: torch's ``.grad`` of a non-leaf tensor."""
        if self.loss is None:
            warnings.warn(f"{proxy._label}.grad was read before any backward() in this trace: it is None, as "
                          "torch's .grad of a non-leaf tensor is (read it after loss.backward() or inside "
                          "`with loss.backward():`)", UserWarning, stacklevel=3)
            return None
        target, dep = self._target(proxy)
        grad = self.recorder.record("grad", target, (NodeRef(dep), NodeRef(self.loss)),
                                    label=f"{proxy._label}.grad", meta=proxy._meta)
        grad._binds.append(GradBind(target, dep, self.loss))  # ``x.grad[:, 0] = 0`` edits the gradient
        return grad

    def set_grad(self, proxy: Proxy, value: Any) -> None:
        """``proxy.grad = value``: the gradient flowing on from ``proxy`` becomes ``value``."""
        target, dep = self._target(proxy)
        value = self.recorder.as_proxy(value)
        check_same_shape(f"{proxy._label}.grad", proxy, value)
        self.recorder.record("set_grad", target, (NodeRef(dep), NodeRef(self.loss), value),
                             label=f"{proxy._label}.grad", meta=value._meta)
