"""Errors raised while recording or running a trace, each pointing at the user's own line."""

from __future__ import annotations

import linecache
import os
import sys
from dataclasses import dataclass
from types import FrameType

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
# Frames from these files are library plumbing, never "the user's line". Tools built on the core
# (bench, demo, analysis) are user code: their traces save into their own frames.
_CORE = ("aliasing", "batching", "compiler", "envoy", "errors", "graph", "hooks", "model", "outputs",
         "proxy", "runner", "structure", "torch_ops", "tracer")
_PLUMBING = tuple(os.path.join(_PACKAGE_DIR, f"{name}.py") for name in _CORE) + (
    os.path.join(_PACKAGE_DIR, "adapters") + os.sep,
    os.path.join(os.path.dirname(os.__file__), "contextlib.py"),
)


@dataclass(frozen=True)
class Where:
    """A place in the user's source: file, line and the function it is in."""

    file: str
    line: int
    function: str = ""

    def code(self) -> str:
        return linecache.getline(self.file, self.line).strip()

    def __str__(self) -> str:
        text = self.code()
        return f'File "{self.file}", line {self.line}' + (f"\n    {text}" if text else "")


_is_plumbing: dict[str, bool] = {}


def user_frame(skip: int = 1) -> FrameType | None:
    """The innermost frame that is not mlxsight (nor contextlib) code."""
    frame = sys._getframe(skip)
    while frame is not None:
        name = frame.f_code.co_filename
        plumbing = _is_plumbing.get(name)
        if plumbing is None:
            plumbing = _is_plumbing[name] = name.startswith(_PLUMBING)
        if not plumbing:
            return frame
        frame = frame.f_back
    return None


def where_now() -> Where | None:
    frame = user_frame(2)
    if frame is None:
        return None
    return Where(frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name)


class MLXSightError(Exception):
    """Base class of mlxsight's errors."""


class TraceError(MLXSightError):
    """A problem with what a trace recorded, reported at the user's line(s)."""

    def __init__(self, message: str, *where: Where | None) -> None:
        self.message = message
        self.where = tuple(w for w in where if w is not None)
        lines = [message] + [str(w) for w in self.where]
        super().__init__("\n".join(lines))


class OutOfOrderError(TraceError):
    """A value is needed before the forward pass produces it (nnsight's name for time travel)."""


class ModuleNotCalledError(TraceError):
    """A module's input or output was read, but the forward never calls that module."""


class IndexOutOfRangeError(TraceError, IndexError):
    """An index past the end of a dimension (torch raises ``IndexError``; MLX would drop a write)."""


class ExpiredProxyError(TraceError):
    """A proxy from a finished trace was used (only saved values survive the block)."""


class NestedTraceError(TraceError):
    """A trace was opened inside another trace of the same model."""
