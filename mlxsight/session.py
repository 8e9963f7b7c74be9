"""Sessions: several traces whose values flow into each other without leaving the graph.

Inside ``with model.session():`` each trace hands all its values to the session's frame as lazy
MLX arrays (nothing is evaluated), so a later trace uses them as inputs and MLX builds one graph
across traces. When the session ends, only saved values are evaluated and kept, as in nnsight.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import mlx.core as mx

from .errors import NestedTraceError, user_frame, where_now
from . import tracer as _tracing
from .tracer import _open_tracers, _write_frame

if TYPE_CHECKING:
    from .tracer import Tracer

_open_sessions: list["Session"] = []


def current_session() -> "Session | None":
    return _open_sessions[-1] if _open_sessions else None


class Session:
    """``with model.session():`` — run several traces as one lazily evaluated computation."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self._frame = None
        self._snapshot: dict[str, Any] = {}
        self._saved: dict[int, Any] = {}
        self._handed: dict[int, Any] = {}

    def __enter__(self) -> "Session":
        if _open_tracers or _open_sessions:
            raise NestedTraceError("a session cannot be opened inside a trace or another session", where_now())
        self._frame = user_frame(2)
        self._snapshot = dict(self._frame.f_locals) if self._frame is not None else {}
        _open_sessions.append(self)
        return self

    def adopt(self, tracer: "Tracer", updates: dict[str, Any], saved_names: set[str]) -> None:
        """Take an inner trace's values: all are pushed (lazily); saved ones will leave the session."""
        for name, value in updates.items():
            self._handed[id(value)] = value
            if name in saved_names:
                self._saved[id(value)] = value
        _write_frame(tracer._frame, updates, [])

    def __exit__(self, exc_type, exc, tb) -> bool:
        _open_sessions.pop()
        if exc_type is not None or self._frame is None:
            return False
        locals_ = dict(self._frame.f_locals)
        keep = {k: v for k, v in locals_.items() if id(v) in self._saved}
        mx.eval([v for v in keep.values() if isinstance(v, mx.array)])
        drop = [k for k, v in locals_.items() if id(v) in self._handed and k not in keep]
        updates = {k: self._snapshot[k] for k in drop if k in self._snapshot}
        deletes = [k for k in drop if k not in self._snapshot]
        if _tracing._value_transform is not None:
            keep = {k: _tracing._value_transform(v) for k, v in keep.items()}
        updates.update(keep)
        _write_frame(self._frame, updates, deletes)
        info = {"file": self._frame.f_code.co_filename, "line": self._frame.f_lineno, "session": True}
        for listener in _tracing._exit_listeners:
            listener(info, dict(keep))
        return False
