"""Sessions: several traces whose values flow into each other without leaving the graph.

Inside ``with model.session():`` each trace hands all its values to the session's frame as lazy
MLX arrays (nothing is evaluated), so a later trace uses them as inputs and MLX builds one graph
across traces. When the session ends, only saved values are evaluated and kept, as in nnsight.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx

from . import context
from .errors import NestedTraceError, user_frame, warn_abandoned, where_now
from .frames import FrameSnapshot, write_frame


class Session:
    """``with model.session():`` — run several traces as one lazily evaluated computation."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self._frame = FrameSnapshot(None)
        self._line: int | None = None
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> "Session":
        frame = user_frame(2)
        warn_abandoned(context.discard_abandoned(frame))
        if context.current_tracer() is not None or context.current_session() is not None:
            raise NestedTraceError("a session cannot be opened inside a trace or another session", where_now())
        self._frame = FrameSnapshot(frame)
        self._line = frame.f_lineno if frame is not None else None
        context.push_session(self)
        return self

    @property
    def block_frame(self) -> Any:
        """The user's frame running this session while it is open (``context.discard_abandoned``)."""
        return self._frame.frame

    @property
    def block_line(self) -> int | None:
        return self._line

    def abandon(self) -> None:
        """Release a session left without its ``__exit__``: nothing is pushed."""
        context.pop_session(self)

    def adopt(self, frame: Any, updates: dict[str, Any], saved_names: set[str]) -> None:
        """Take an inner trace's values (bound in its block's ``frame``): all are pushed (lazily); saved ones will leave the session.

        Under a value transform (compat: torch) the script holds transformed values inside the session
        too, as nnsight's session body holds real tensors between its traces."""
        transform = context.settings.value_transform
        if transform is not None:
            updates = {k: transform(v) for k, v in updates.items()}
        for name, value in updates.items():
            if name in saved_names:
                self._saved[id(value)] = value
        write_frame(frame, updates, [])

    def __exit__(self, exc_type, exc, tb) -> bool:
        context.pop_session(self)
        frame = self._frame.frame
        if exc_type is not None or frame is None:
            return False
        before = self._frame.values
        locals_ = dict(frame.f_locals)
        keep = {k: v for k, v in locals_.items() if id(v) in self._saved}
        mx.eval([v for v in keep.values() if isinstance(v, mx.array)])
        # As nnsight's outermost block, the session pushes only saved values: every other name bound
        # in it (a trace's values, a plain value of its body) goes back to its value before, but the
        # session itself (``with model.session() as session``).
        drop = [k for k in self._frame.changed(locals_, keep=(self,)) if k not in keep]
        updates = {k: before[k] for k in drop if k in before}
        deletes = [k for k in drop if k not in before]
        transform = context.settings.value_transform
        if transform is not None:
            keep = {k: transform(v) for k, v in keep.items()}
        updates.update(keep)
        write_frame(frame, updates, deletes)
        context.notify_exit({**self._frame.info, "session": True}, keep)
        return False
