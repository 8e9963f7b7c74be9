"""Metrics for patching and steering: a number per row from the logits at the last position.

A metric is any callable ``metric(logits) -> values`` taking the last position's logits as a
backend tensor (``mx.array`` or ``torch.Tensor``) of shape ``[rows, vocab]`` and returning one value
per row (``[rows]``). It must use operations both backends share (indexing, arithmetic, the helpers
in ``backend``) to run on either; attribution patching differentiates it, so it must be
differentiable there. ``name`` (or ``__name__``) labels results.

A metric that compares against the clean run (``kl_div``) has ``bind(clean_logits)``: the tools call
it with the clean run's last-position logits (``[1, vocab]``) and use the metric it returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from . import backend

Metric = Callable[[Any], Any]


@dataclass(frozen=True)
class logit_diff:  # noqa: N801  (a metric reads as a function: tools.logit_diff(good, bad))
    """``logits[good_id] - logits[bad_id]`` at the last position."""

    good_id: int
    bad_id: int

    @property
    def name(self) -> str:
        return f"logit_diff({self.good_id}, {self.bad_id})"

    def __call__(self, logits: Any) -> Any:
        return logits[:, self.good_id] - logits[:, self.bad_id]


@dataclass(frozen=True)
class probability:  # noqa: N801
    """The probability of ``token_id`` at the last position (softmax over the vocabulary)."""

    token_id: int

    @property
    def name(self) -> str:
        return f"probability({self.token_id})"

    def __call__(self, logits: Any) -> Any:
        return backend.softmax(logits, axis=-1)[:, self.token_id]


@dataclass(frozen=True)
class kl_div:  # noqa: N801
    """``KL(clean || run)`` of the last position's next-token distributions (nats; 0 = the clean run).

    Unbound, it needs the clean logits: the tools bind it. ``reference`` holds them once bound."""

    reference: Any = None

    name = "kl_div"

    def bind(self, clean_logits: Any) -> "kl_div":
        return kl_div(clean_logits)

    def __call__(self, logits: Any) -> Any:
        if self.reference is None:
            raise ValueError("kl_div needs the clean run's logits: pass it to a tool (which binds it), "
                             "or call kl_div().bind(clean_logits)")
        ref = backend.log_softmax(self.reference, axis=-1)
        out = backend.log_softmax(logits, axis=-1)
        return (ref.exp() * (ref - out)).sum(-1)


def metric_name(metric: Any) -> str:
    return str(getattr(metric, "name", None) or getattr(metric, "__name__", None) or type(metric).__name__)


def bind(metric: Any, clean_logits: Any) -> Any:
    """``metric`` ready to apply: bound to the clean logits when it asks for them."""
    return metric.bind(clean_logits) if hasattr(metric, "bind") else metric
