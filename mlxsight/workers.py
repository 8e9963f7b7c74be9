"""Invoke bodies as workers that meet at barriers, as nnsight runs them.

nnsight runs the body of every ``with tracer.invoke(...)`` as its own worker, interleaved with the
forward: a worker runs until it asks for a module value the forward has not reached yet, and the
forward serves the workers waiting at each point in turn. A barrier (``tracer.barrier(n)``) parks
the workers that call it until ``n`` have arrived. So a variable one body rebinds in a loop (the
IOI tutorial's ``hidden_state``, one layer after another) holds, at the barrier, the value of the
layer that body is parked at, and another body reading it after the barrier gets that layer's.

mlxsight records instead of running, and records invoke bodies in order, one after the other. Once a
trace creates a barrier, its later invoke bodies are captured instead (read back from the source
as ``blocks`` does, the inline body skipped) and run at the trace's exit as ``Workers``: greenlets
switched by a recorder-time interleaver that walks the hook points in forward order as nnsight's
does. A worker runs until it asks for a point later than the one reached (``reach``) or calls a
barrier; the interleaver then moves to the earliest point asked for and resumes the workers
waiting there, in invoke order. A worker asking for a point already passed gets nnsight's
``OutOfOrderError``. Only the order in which the graph is recorded changes: the graph is the same
IR and still runs as one forward at exit.

Names a body binds live in its ``Scope``: what its frame held when it was captured, then what the
bodies written in the same frame bound (shared, as nnsight's), then the frame's globals. At the end
each worker's names are written to the trace's frame (in invoke order), where the trace's exit
treats them as names bound in the block: saved values are pushed, unsaved proxies reverted.
"""

from __future__ import annotations

import ast
from collections import deque
from types import CodeType, FrameType
from typing import TYPE_CHECKING, Any, Callable

from .blocks import SourceUnavailable, compile_with, find_with, skip_inline
from .errors import OutOfOrderError, where_now
from .frames import write_frame
from .recorder import StopTrace

if TYPE_CHECKING:
    from .graph import HookPoint
    from .tracer import Invoke, Tracer

BARRIER_UNMET = "A barrier was never reached by every block it waits for; check the count it was created with"
_END = float("inf")  # the position of a value the forward gives only at its end (a generation's result)


class EmptyBody(Exception):
    """An invoke body with no statement that runs (``pass``): nothing to record, so it stays inline."""


def _body(filename: str, line: int, globals_: dict) -> tuple[CodeType, int]:
    """The invoke block's body, compiled, and the line of its first statement that runs. A body
    starting with ``try:`` is refused, as nnsight refuses it: CPython puts that line on an
    instruction no exception handler covers, so the skip raised there would leave the frame past the
    block's ``__exit__`` (``pass`` and bare constants compile to such instructions too: they are
    passed over)."""
    node = find_with(filename, line, globals_)
    first = next((stmt for stmt in node.body if not _inert(stmt)), None)
    if first is None:
        raise EmptyBody
    if type(first).__name__ in ("Try", "TryStar"):
        raise ValueError("an invoke block cannot start with `try:` (nnsight refuses it too): put a statement "
                         "above the `try`, or move the `try` outside the block")
    return compile_with(node, filename), first.lineno


def _inert(stmt: ast.stmt) -> bool:
    """A statement that compiles to no instruction of the block's protected range."""
    return isinstance(stmt, (ast.Pass, ast.Global, ast.Nonlocal)) or (
        isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant))


class Scope(dict):
    """The names one invoke body runs with (its ``exec`` globals and locals at once).

    Looked up in order: the capture-time copy of its frame's variables (this dict), the names that
    bodies written in the same frame have bound (``shared``), the frame's globals. Writes land here
    and in ``shared``, so sibling bodies see them (nnsight's ``Scope``); ``written`` is what the
    body bound."""

    def __init__(self, own: dict, shared: dict, globals_: dict) -> None:
        super().__init__(own)
        self.shared, self.globals_ = shared, globals_
        self.written: list[str] = []

    def __missing__(self, key: str) -> Any:
        try:
            return self.shared[key]
        except KeyError:
            return self.globals_[key]

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self.shared[key] = value
        if key not in self.written:
            self.written.append(key)

    def writes(self) -> dict[str, Any]:
        return {k: dict.__getitem__(self, k) for k in self.written if dict.__contains__(self, k)}


class Barrier:
    """``b = tracer.barrier(n)``; ``b()`` in n invoke bodies. A body run as a worker parks at the call
    until n have arrived (one round; the barrier can be used again). A call outside every worker
    (an invoke recorded inline, before the trace had a barrier) arrives without waiting."""

    def __init__(self, n: int, workers: "Workers") -> None:
        self.n, self.arrivals, self.workers = n, 0, workers
        self.waiting: list[Worker] = []

    def __call__(self) -> None:
        self.arrivals += 1
        self.workers.arrive(self)

    @staticmethod
    def check(barriers: list["Barrier"]) -> None:
        if any(b.arrivals % b.n for b in barriers):
            raise ValueError(BARRIER_UNMET)


class Worker:
    """One captured invoke body: its code, its names, and where it waits."""

    def __init__(self, invoke: "Invoke", code: CodeType, state: tuple) -> None:
        self.invoke, self.code = invoke, code
        self.scope: Scope | None = None  # set at the body's first line (after ``as`` has bound)
        self.state = state  # the recorder's per-body state while this body runs (``Workers.resume``)
        self.request: Any = None  # the forward position it waits for
        self.barrier: Barrier | None = None  # the barrier it waits at
        self.greenlet: Any = None

    def body(self) -> None:
        try:
            exec(self.code, self.scope)
        except StopTrace:  # tracer.stop() or an open loop ended this body only (as ``Invoke.__exit__``)
            pass


class Workers:
    """The invoke bodies of one trace, captured once it has a barrier, and their interleaving."""

    def __init__(self, tracer: "Tracer") -> None:
        self.tracer = tracer
        self.workers: list[Worker] = []
        self.position: Any = None  # the forward position reached (None: before the first)
        self.current: Worker | None = None  # the worker running now
        self._ready: deque[Worker] = deque()
        self._bodies: dict[tuple[str, int], tuple[CodeType, int]] = {}  # per `with` line: its body, first line
        self._shared: dict[int, tuple[FrameType, dict]] = {}  # per frame: the names its bodies bound
        self._main: Any = None  # the greenlet the interleaver runs in
        self._pending: list[Callable[[], None]] = []  # skips set and not yet undone by their block's exit

    # -- while the trace's block runs ----------------------------------------------------------
    def capture(self, invoke: "Invoke", frame: FrameType) -> Callable[[], None] | None:
        """Take the invoke's body as a worker and make it not run inline; returns what undoes that
        (called at the block's exit, which swallows the ``SkipBlock`` it raises), or ``None`` when
        the body's source cannot be read (code run from a string) or it runs nothing (``pass``):
        it is then recorded inline."""
        key = (frame.f_code.co_filename, frame.f_lineno)
        found = self._bodies.get(key)
        if found is None:
            try:
                found = _body(key[0], key[1], frame.f_globals)
            except (SourceUnavailable, EmptyBody):
                return None
            self._bodies[key] = found
        code, body_line = found
        recorder = self.tracer.recorder
        worker = Worker(invoke, code, ([invoke], recorder.step, recorder.looping, recorder.beyond))
        shared = self._shared.setdefault(id(frame), (frame, {}))[1]

        def at_body(f: FrameType) -> None:
            worker.scope = Scope(dict(f.f_locals), shared, f.f_globals)

        self.workers.append(worker)
        restore = skip_inline(frame, at_body, body_line)
        self._pending.append(restore)

        def undo() -> None:
            if restore in self._pending:
                self._pending.remove(restore)
                restore()

        return undo

    # -- at the trace's exit ---------------------------------------------------------------------
    def run(self) -> None:
        """Run every captured body to its end, interleaved in forward order; then write the names
        they bound to the trace's frame. On any failure every worker is unwound first."""
        from greenlet import getcurrent, greenlet

        if not self.workers:
            return
        recorder = self.tracer.recorder
        outer = (recorder.invokes, recorder.step, recorder.looping, recorder.beyond)
        self._main = getcurrent()
        for worker in self.workers:
            worker.greenlet = greenlet(worker.body, parent=self._main)
        self._ready.extend(self.workers)
        try:
            while True:
                while self._ready:
                    self.resume(self._ready.popleft())
                waiting = [w for w in self.workers if w.request is not None]
                if waiting:  # the forward moves on to the earliest point asked for
                    self.position = min(w.request for w in waiting)
                    for worker in waiting:
                        if worker.request == self.position:
                            worker.request = None
                            self._ready.append(worker)
                    continue
                parked = next((w for w in self.workers if w.barrier is not None), None)
                if parked is None:
                    break
                # a round that never fills: raised where the first body waits, so it names that line
                parked.barrier.waiting.remove(parked)
                parked.barrier = None
                self.resume(parked, ValueError(BARRIER_UNMET))
            self._push()
        except BaseException:
            self._unwind()
            raise
        finally:
            recorder.invokes, recorder.step, recorder.looping, recorder.beyond = outer
            self.current = None
            self.release()

    def resume(self, worker: Worker, error: BaseException | None = None) -> None:
        """Run ``worker`` until it waits again or ends (with ``error`` raised where it waits)."""
        recorder = self.tracer.recorder
        recorder.invokes, recorder.step, recorder.looping, recorder.beyond = worker.state
        self.current = worker
        try:
            if error is None:
                worker.greenlet.switch()
            else:
                worker.greenlet.throw(error)
        finally:
            self.current = None
            worker.state = (recorder.invokes, recorder.step, recorder.looping, recorder.beyond)

    def _park(self) -> None:
        """Hand control back to the interleaver until it resumes this worker."""
        self._main.switch()

    def _unwind(self) -> None:
        """End every worker still waiting (its ``finally`` blocks run); what they raise on the way
        out gives way to the error that ended the run."""
        from greenlet import GreenletExit

        for worker in self.workers:
            if worker.greenlet is not None and worker.greenlet:
                try:
                    worker.greenlet.throw(GreenletExit)
                except BaseException:  # noqa: BLE001 - the error already in flight is the one to report
                    pass
            worker.request = worker.barrier = None
        self._ready.clear()

    def _push(self) -> None:
        """Each worker's names into the trace's frame, in invoke order (a later body's binding of a
        name wins, as in nnsight)."""
        frame = self.tracer.block_frame
        if frame is None:
            return
        updates: dict[str, Any] = {}
        for worker in self.workers:
            if worker.scope is not None:
                updates.update(worker.scope.writes())
        if updates:
            write_frame(frame, updates, [])

    def release(self) -> None:
        """Drop what the bodies hold (their names, a copy of their frame's, the frames): the tracer
        may be kept (``as tracer``), and these hold the model and every value of the frame. Called
        when the trace closes, however it closes; a skip its block never undid (the block left
        another way) is undone here, so no trace function outlives the trace."""
        while self._pending:
            self._pending.pop()()
        for worker in self.workers:
            worker.scope = worker.greenlet = None
        self._shared.clear()

    # -- what a worker's body calls --------------------------------------------------------------
    def reach(self, position: Any, point: "HookPoint") -> None:
        """The running body asks for ``point`` (at forward ``position``): it waits until the
        interleaving gets there; a point already passed is nnsight's ``OutOfOrderError``."""
        worker = self.current
        if worker is None:
            return  # recorded inline: the trace's own block, or an invoke from before its first barrier
        position = _END if position is None else position
        if self.position is not None:
            if position == self.position:
                return
            if position < self.position:
                raise OutOfOrderError(
                    f"'{point}' was requested but the model already ran past it: the invoke blocks of a "
                    f"trace with a barrier run together in forward order (as in nnsight), and another "
                    f"block asked for a later point first. Request it before the barrier that let the "
                    f"model move on", where_now())
        worker.request = position
        self._park()

    def arrive(self, barrier: Barrier) -> None:
        """The running body calls ``barrier``: it waits until the round is full; the last to arrive
        lets the others go first (each runs to where it waits next), then goes on itself."""
        worker = self.current
        if worker is None:
            return  # inline: nothing can wait, the arrival is counted
        if barrier.arrivals % barrier.n:
            barrier.waiting.append(worker)
            worker.barrier = barrier
            self._park()
            return
        released, barrier.waiting = barrier.waiting, []
        for other in released:
            other.barrier = None
        self._ready.extendleft(reversed(released + [worker]))
        self._park()
