"""``nnsight.intervention.backward``: ``with tensor.backward():`` on a plain torch tensor.

nnsight patches ``torch.Tensor.backward`` when imported so that the ``with`` form opens a backward
trace on any tensor, inside a model's trace or not (its docs/usage/backward-and-grad.md: a leaf's
``x.grad.save()`` in the block); a bare ``t.backward()`` stays torch's. Inside an mlxsight trace the
loss is an mlxsight proxy with its own ``backward``; this covers the torch tensors a script holds
outside one. The block runs after torch's backward has finished, so it reads what torch keeps
(leaves' and ``retain_grad()`` tensors' ``.grad``); an assignment to ``.grad`` in the block does not
flow on to earlier tensors as nnsight's does (docs/compatibility.md).
"""

from __future__ import annotations

import dis
import functools
import sys
from typing import Any

from .._surface import missing

_WITH_OPS = {"BEFORE_WITH", "SETUP_WITH"}

try:
    import torch
except ImportError:  # the mlx side runs without torch: there is nothing to patch
    torch = None


def _called_as_with(frame: Any) -> bool:
    """Whether the call at ``frame``'s current instruction is the expression of a ``with``."""
    after = [i for i in dis.get_instructions(frame.f_code) if i.offset > frame.f_lasti][:2]
    names = [i.opname for i in after]
    return bool(names) and (names[0] in _WITH_OPS or names[:2] == ["COPY", "LOAD_SPECIAL"])


class BackwardBlock:
    """The ``with`` block of ``with t.backward():`` on a torch tensor; the backward has run.
    Values in it are real tensors, so ``.save()`` there hands back the value itself; at its end the
    names bound to saved values are reported to exit listeners, as nnsight's backward trace pushes
    them."""

    open_blocks: list["BackwardBlock"] = []  # innermost last (torch's backward is process-wide too)

    def __init__(self) -> None:
        self.saved: dict[int, Any] = {}
        self.frame: Any = None

    def __enter__(self) -> "BackwardBlock":
        self.frame = sys._getframe(1)
        self.info = {"file": self.frame.f_code.co_filename, "line": self.frame.f_lineno}
        BackwardBlock.open_blocks.append(self)
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> bool:
        from mlxsight import context

        BackwardBlock.open_blocks.remove(self)
        frame, self.frame = self.frame, None
        if exc_type is None:
            values = {n: v for n, v in frame.f_locals.items() if id(v) in self.saved}
            context.notify_exit(self.info, values)
        return False


def save(obj: Any) -> Any:
    """nnsight's ``save``: mlxsight's, and inside a plain-torch backward block the value itself."""
    from mlxsight import context, save as mlx_save

    blocks = BackwardBlock.open_blocks
    if blocks and context.current_tracer() is None and context.current_session() is None:
        blocks[-1].saved[id(obj)] = obj
        return obj
    return mlx_save(obj)


if torch is not None:
    _original_backward = torch.Tensor.backward

    @functools.wraps(_original_backward)
    def _backward(tensor: Any, *args: Any, **kwargs: Any) -> Any:
        if not _called_as_with(sys._getframe(1)):
            return _original_backward(tensor, *args, **kwargs)
        if not tensor.requires_grad:  # nnsight's check and error class
            raise NotImplementedError(
                "This tensor does not require grad, so a backward session cannot produce gradients: "
                "nothing the block reads can ever receive one.")
        _original_backward(tensor, *args, **kwargs)
        return BackwardBlock()

    def install() -> None:
        """Patch ``torch.Tensor.backward`` (idempotent), as importing nnsight does."""
        if torch.Tensor.backward is not _backward:
            torch.Tensor.backward = _backward

    install()

__getattr__ = missing(__name__)
