"""Errors raised while recording or running a trace, each pointing at the user's own line."""

from __future__ import annotations

import linecache
import os
import sys
import warnings
from types import FrameType
from typing import Any

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
# Library frames are decided by location: every file of the package is plumbing, never "the user's
# line", except the layers above the core, which use the public API as any user does (their traces
# save into their own frames): the research tools, views, the bench and the demo.
_ABOVE_CORE = tuple(os.path.join(_PACKAGE_DIR, name) for name in ("tools" + os.sep, "views" + os.sep, "app" + os.sep,
                                                                  "bench.py", "demo.py"))
_CONTEXTLIB = os.path.join(os.path.dirname(os.__file__), "contextlib.py")


def is_library_file(filename: str) -> bool:
    """Whether frames from ``filename`` are mlxsight's own machinery (or contextlib's)."""
    if filename == _CONTEXTLIB:
        return True
    return filename.startswith(_PACKAGE_DIR) and not filename.startswith(_ABOVE_CORE)


class Where:
    """A place in the user's source: file, line and the function it is in (a value; one is made
    for every recorded operation, so a plain slotted class rather than a frozen dataclass)."""

    __slots__ = ("file", "line", "function")

    def __init__(self, file: str, line: int, function: str = "") -> None:
        self.file, self.line, self.function = file, line, function

    def _key(self) -> tuple:
        return self.file, self.line, self.function

    def __eq__(self, other: object) -> bool:
        return type(other) is Where and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"Where(file={self.file!r}, line={self.line!r}, function={self.function!r})"

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
            plumbing = _is_plumbing[name] = is_library_file(name)
        if not plumbing:
            return frame
        frame = frame.f_back
    return None


def warn_abandoned(blocks: list[tuple[Any, str, int]]) -> None:
    """Say that blocks left without their ``__exit__`` were discarded (``context.discard_abandoned``)."""
    for _, filename, line in blocks:
        warnings.warn(f"the block opened at {filename}:{line} was left without its exit (a debugger quitting "
                      "inside it, say) and has been discarded: nothing of it ran", RuntimeWarning, stacklevel=3)


def where_now() -> Where | None:
    frame = user_frame(2)
    if frame is None:
        return None
    code = frame.f_code
    return Where(code.co_filename, frame.f_lineno, code.co_name)


class MLXSightError(Exception):
    """Base class of mlxsight's errors."""


class CheckpointCodeError(MLXSightError, ValueError):
    """A checkpoint that cannot load without running its own code (mlxsight never runs it)."""


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


class NegativeStepError(TraceError, ValueError):
    """A negative slice step under torch semantics (nnsight scripts): torch refuses it, so do we."""


class ExpiredProxyError(TraceError):
    """A proxy from a finished trace was used (only saved values survive the block)."""


class NestedTraceError(TraceError):
    """A trace was opened inside another trace of the same model."""


MLX_FUNCTION_HINT = ("mlxsight: MLX functions cannot take proxies (values of a trace have no value while "
                     "recording). Record them with mlxsight.apply: `mlxsight.apply(mx.softmax, proxy, axis=-1)`; "
                     "torch-style methods work directly: `proxy.softmax(-1)`.")


def hint_mlx_function(exc: BaseException) -> None:
    """Point at ``mlxsight.apply`` when an MLX function was given a proxy inside a trace.

    nanobind's own error names neither mlxsight nor a way out: a ``TypeError`` listing the proxy's
    type, or (for functions that take scalars) a bare ``RuntimeError: std::bad_cast``."""
    text = str(exc)
    if (isinstance(exc, TypeError) and "Invoked with types:" in text and "mlxsight.proxy.Proxy" in text
            or isinstance(exc, RuntimeError) and text == "std::bad_cast"):
        if MLX_FUNCTION_HINT not in getattr(exc, "__notes__", ()):
            exc.add_note(MLX_FUNCTION_HINT)
class NNsightDeprecationWarning(FutureWarning):
    """What nnsight deprecated (``model.iter``, ``model.generator.output``, ...), warned under
    nnsight's own class so that ``pytest.warns`` and warning filters behave alike on both."""
