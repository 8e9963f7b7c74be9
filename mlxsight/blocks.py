"""The body of a ``with`` block, as code of its own: nnsight's deprecated block form
``with tracer.iter[...]:`` runs its body once per step, and ``tracer.info`` (``BlockInfo``) gives it.

``enter(steps)`` reads the block back from the caller's file, runs its body once per step in the
caller's variables (writing new and rebound names back), then makes the inline body not run: a
one-shot line trace in the caller's frame raises ``SkipBlock``, which the context manager's
``__exit__`` swallows. The trace function in place before is restored on exit.
"""

from __future__ import annotations

import ast
import functools
import linecache
import sys
from types import CodeType, FrameType
from typing import Any, Callable, Iterable

from .frames import write_frame


class SkipBlock(Exception):
    """Raised at the first line of a block whose body already ran; swallowed by its ``__exit__``."""


class BlockInfo:
    """Where a trace block is, as nnsight's ``tracer.info``: ``frame``, the live frame the block runs
    in (``None`` once the block has ended: nnsight drops it so the caller's scope can be freed), its
    ``filename`` and ``line``, and ``code``, the block's body compiled (read from the file on first use)."""

    def __init__(self, frame: FrameType) -> None:
        self.frame: FrameType | None = frame
        self.filename, self.line = frame.f_code.co_filename, frame.f_lineno
        self._globals = frame.f_globals
        self._code: CodeType | None = None

    @property
    def code(self) -> CodeType:
        if self._code is None:
            self._code = compile_body(self.filename, self.line, self._globals)
        return self._code

    def __repr__(self) -> str:
        return f"BlockInfo({self.filename}:{self.line})"


def body_code(frame: FrameType) -> CodeType:
    """The compiled body of the ``with`` statement the frame is executing (its own file's lines)."""
    return compile_body(frame.f_code.co_filename, frame.f_lineno, frame.f_globals)


def compile_body(filename: str, line: int, globals_: dict) -> CodeType:
    """The compiled body of the ``with`` statement being entered at ``filename:line``."""
    return compile_with(find_with(filename, line, globals_), filename)


@functools.lru_cache(maxsize=256)
def compile_with(node: ast.With | ast.AsyncWith, filename: str) -> CodeType:
    """A ``with`` statement's body, compiled once per parsed node (``find_with`` parses a file
    version once, so a block entered again, a trace in a loop, reuses its code)."""
    return compile(ast.Module(body=node.body, type_ignores=[]), filename, "exec")


class SourceUnavailable(RuntimeError):
    """The block's source cannot be read back (code compiled from a string, a changed file)."""


def find_with(filename: str, line: int, globals_: dict) -> ast.With | ast.AsyncWith:
    """The ``with`` statement being entered at ``filename:line``, read back from its file."""
    source = "".join(linecache.getlines(filename, globals_))
    if not source:
        raise SourceUnavailable(f"the block form needs the script's source ({filename} is not readable): "
                                "write `for step in tracer.iter[...]:` instead")
    found = None
    for node in _with_statements(filename, source):
        if node.lineno <= line < node.body[0].lineno:
            if found is None or node.lineno > found.lineno:
                found = node
    if found is None:
        raise SourceUnavailable(f"no `with` block found at {filename}:{line}")
    return found


@functools.lru_cache(maxsize=64)
def _with_statements(filename: str, source: str) -> tuple:
    """The ``with`` statements of a source (parsed once per file version: traces in a loop re-enter them)."""
    return tuple(node for node in ast.walk(ast.parse(source, filename))
                 if isinstance(node, (ast.With, ast.AsyncWith)))


def run_body(frame: FrameType, code: CodeType, each: Iterable[Any], before: Callable[[Any], None]) -> None:
    """Run ``code`` once per item of ``each`` (calling ``before(item)`` first) in the frame's
    variables; names the body binds are written back to the frame."""
    module_level = frame.f_locals is frame.f_globals
    if module_level:
        for item in each:
            before(item)
            exec(code, frame.f_globals)
        return
    local = dict(frame.f_locals)
    namespace = {**frame.f_globals, **local}  # one dict: comprehensions in the body see the locals
    for item in each:
        before(item)
        exec(code, namespace)
    updates = {k: v for k, v in namespace.items()
               if k in local and v is not local[k]
               or k not in local and (k not in frame.f_globals or v is not frame.f_globals[k])}
    write_frame(frame, updates, [])


def skip_inline(frame: FrameType, at_body: Callable[[FrameType], None] | None = None,
                body_line: int = 0) -> Callable[[], None]:
    """Make the frame's next line (from ``body_line`` on: a ``with`` header over several lines
    reaches its own lines first) raise ``SkipBlock``; returns the function that undoes it.
    ``at_body(frame)`` is called first, at that line (the ``with ... as`` target is bound by then)."""
    previous = sys.gettrace()

    def local_trace(f, event, arg):
        if event == "line" and f.f_lineno >= body_line:
            f.f_trace = None
            if at_body is not None:
                at_body(f)
            raise SkipBlock
        return local_trace

    def global_trace(f, event, arg):
        return None

    sys.settrace(global_trace)  # line events reach a frame's f_trace only while tracing is on
    frame.f_trace_lines = True
    frame.f_trace = local_trace

    def restore() -> None:
        frame.f_trace = None
        sys.settrace(previous)

    return restore
