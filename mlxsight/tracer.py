"""The trace context: enter -> record -> compile -> run -> push.

``with model.trace(inputs) as tracer:`` executes its body on proxies (nothing is computed; the
``Recorder`` builds the graph), and on exit compiles the graph, runs it in a single forward,
evaluates only the saved values and writes them back to the caller's variables, as nnsight 0.8
does: only saved objects are pushed. Rows are the ``Batcher``'s, the model is reached through its
driver (``driver.Driver``), the caller's frame through ``frames``.

Every exit path, ``BaseException`` included, closes the trace: this thread has no open trace
afterwards, no module is left hooked, and the model's lock is released.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from . import context
from .batching import Batcher, RowSlice
from .cache import Cache, Caches
from .context import (  # noqa: F401 - the public names stay importable from here
    add_exit_listener, current_session, current_tracer, remove_exit_listener, save, set_torch_semantics,
    set_value_transform, torch_semantics,
)
from .errors import ExpiredProxyError, NestedTraceError, hint_mlx_function, user_frame, warn_abandoned, where_now
from .blocks import BlockInfo, SkipBlock
from .frames import FrameSnapshot, hand_back, holds, is_container
from .graph import Graph, HookPoint, Node
from .hosting import hook_order
from .materialize import Materialized
from .proxy import Proxy, apply, map_proxies, proxies_in, substitute  # noqa: F401 - apply: importable from here
from .recorder import LoopEnded, Recorder, StopTrace  # noqa: F401
from .runner import NEVER_REACHED, Runner
from .structure import LastStructure, Structure, skeleton
from .workers import Barrier, Workers

if TYPE_CHECKING:
    from .model import NNsight

NO_INPUT = "trace() needs an input, or at least one `with tracer.invoke(...)` block"


def _owner(node: Node, first_reader: dict[int, int | None]) -> int | None:
    """The invoke a node was recorded for (a whole-batch read: the invoke that first asked for it)."""
    return node.invoke if node.invoke is not None else first_reader.get(node.index)


class Steps:
    """The steps one ``tracer.iter[...]`` loop visits."""

    def __init__(self, recorder: Recorder, steps: list[int], open_ended: bool = False) -> None:
        self.recorder, self.steps, self.open_ended = recorder, steps, open_ended

    def __iter__(self):
        recorder = self.recorder
        previous = recorder.step
        recorder.looping += 1  # a loop asking for a step the run does not make ends (Recorder)
        try:
            body = None
            for step in self.steps:
                recorder.step = step
                start = len(recorder.graph)
                yield step
                body = (start, len(recorder.graph), step)
            if self.open_ended and body is not None:
                recorder.graph.open_loops.append(body)
            if self.open_ended:  # nnsight's open loop waits for one more step, which never comes
                recorder.step = recorder.beyond = len(self.steps)
                yield len(self.steps)
        finally:
            recorder.looping -= 1
            recorder.step = previous
            recorder.beyond = None

    def __enter__(self):
        """The block form ``with tracer.iter[...]:`` (deprecated in nnsight): the body runs once per
        step, as the for form's would; the inline body is then skipped."""
        import warnings

        from .blocks import body_code, run_body, skip_inline
        from .errors import NNsightDeprecationWarning

        warnings.warn("`with tracer.iter[...]:` is deprecated (as in nnsight); use `for step in tracer.iter[...]:`",
                      NNsightDeprecationWarning, stacklevel=2)
        frame = user_frame(2)
        code = body_code(frame)
        recorder = self.recorder
        previous = recorder.step
        last: list = []  # where the last step's body starts in the graph, and that step

        def before(step: int) -> None:
            recorder.step = step
            last[:] = [len(recorder.graph), step]

        try:
            run_body(frame, code, self.steps, before)
        finally:
            recorder.step = previous
        if self.open_ended:
            # nnsight's open block form waits for a step the run never makes: the code after it in
            # this invoke does not run (as after an open `for` loop), here without that loop's warning
            if last:
                recorder.graph.open_loops.append((last[0], len(recorder.graph), last[1]))
            raise LoopEnded()
        self._restore = skip_inline(frame)
        return self

    def __exit__(self, exc_type, exc, tb):
        from .blocks import SkipBlock

        self._restore()
        return exc_type is not None and issubclass(exc_type, SkipBlock)


class StepIndexer:
    def __init__(self, tracer: "Tracer") -> None:
        self.tracer = tracer

    def __getitem__(self, key: Any) -> Steps:
        open_ended = isinstance(key, slice) and key.stop is None
        if isinstance(key, int):
            steps = [key]
        elif isinstance(key, slice):
            stop = key.stop if key.stop is not None else self.tracer.step_count()
            steps = list(range(key.start or 0, stop, key.step or 1))
        else:
            steps = [int(k) for k in key]
        if any(s < 0 for s in steps):
            raise ValueError("tracer.iter takes non-negative steps")
        return Steps(self.tracer.recorder, steps, open_ended and (key.step or 1) == 1)


class Invoke:
    """One input's rows of the batched forward; reads inside it see only those rows."""

    def __init__(self, tracer: "Tracer", data: Any, index: int, rows: tuple[int, int] | None) -> None:
        self.tracer, self.data, self.index, self.rows = tracer, data, index, rows
        self._structure: tuple | None = None

    def structure(self) -> Structure:
        """The hook points this invoke's reads see: of its rows padded as wide as the batch so far
        (as nnsight serves them, padded to the batch; a later, longer invoke widens them)."""
        return self._learn()[0]

    def view(self) -> "RowSlice | None":
        """This invoke's rows of a value of ``structure()`` (``None``: all of them)."""
        return self._learn()[1]

    def _learn(self) -> tuple:
        tracer = self.tracer
        key = tracer.recorder.instrumented
        if self._structure is None or self._structure[0] != key:
            if self.data is None or self.rows is None:  # the whole batch (the trace's own input)
                structure, view = tracer.structure_for(tracer.batcher.batch()), None
            elif not tracer.batcher.separable():  # a continued KV cache: rows of one length, none padded
                structure, view = tracer.structure_for(tracer.batcher.batch([self.data])), None
            else:
                batch, datas = tracer.batcher.part([self.data])
                start, stop = tracer.batcher.rows_in(datas, self.data)
                size = tracer.batcher.driver.rows(batch)
                view = None if (start, stop) == (0, size) else RowSlice(start, stop, size)
                structure = tracer.structure_for(batch)
            self._structure = (key, structure, view)
        return self._structure[1:]

    def __enter__(self) -> "Invoke":
        tracer = self.tracer
        workers = tracer.workers
        if workers is None and tracer.interleaves_invokes and not context.settings.relaxed_order:
            workers = tracer.workers = Workers(tracer)
        if workers is not None:  # the body runs as a worker at the trace's exit, interleaved in forward order
            restore = workers.capture(self, user_frame(2))
            if restore is not None:
                self._restore = restore
                return self
        tracer.recorder.invokes.append(self)  # recorded inline, now: an edit, relaxed order, no source, `pass`
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        restore = self.__dict__.pop("_restore", None)
        if restore is not None:
            restore()
            return exc_type is not None and issubclass(exc_type, SkipBlock)
        self.tracer.recorder.invokes.pop()
        # An open iter loop or a tracer.stop() ends its own invoke only: in nnsight each invoke is its
        # own worker (a stop also ends the run there, which the recorder holds its siblings to).
        return exc_type is not None and issubclass(exc_type, StopTrace)


class Tracer:
    """One trace block: records it (``recorder``), then compiles, runs and pushes on exit."""

    stop_early = True  # a single forward can end after the last needed hook point
    single_call = True  # the forward is one call of the root module (generation: one per step)
    example_shapes = False  # True when shapes while recording come from an example, not the real input
    runs_failed_edits = True  # a stored edit whose body failed raises here (not while recording an edit)
    runs_parts = True  # a value needed while recording may run on the rows of the invokes it needs only
    # ``with tracer.invoke(...)`` bodies run as workers interleaved in forward order (``workers``), as
    # nnsight runs them, so a name one body binds reaches another only where nnsight's would
    interleaves_invokes = True
    steps_known = True  # the steps a block records are the steps its run makes (generation: not so)

    _pushed: dict | None = None  # the saved values pushed to the caller, once run (for the notebook display)
    _caches: Caches | None = None  # the block's tracer.cache() requests (made on the first)
    rows_per_input = 1  # the model sees each input row this many times (generate's num_return_sequences)
    # set on entry (class defaults: a trace is made per block, so it sets only what it must)
    _session: Any = None  # the session this trace runs in
    _frame = FrameSnapshot(None)  # the caller's frame (this one holds none)
    info: BlockInfo | None = None  # where the block is (nnsight's tracer.info)
    workers: Workers | None = None  # the invoke bodies run as workers (from the first `with tracer.invoke`)

    def _repr_html_(self) -> str:
        from .notebook import tracer_html

        return tracer_html(self, self._pushed)

    def __init__(self, model: "NNsight", inputs: tuple, kwargs: dict, scan: bool = False) -> None:
        self.model, self.driver, self.scan = model, model._driver, scan
        self.batcher = Batcher(self.driver, self.rows_per_input)
        self.recorder = Recorder(self)
        self._inputs, self._kwargs = inputs, kwargs
        self._open = self._locked = False
        self._implicit = False  # the trace was given an input: that input is the only invoke
        self._invokes: list[Invoke] = []
        self._saved: dict[int, Any] = {}
        self._structure = LastStructure()  # of the last batch asked about
        self.materialized = Materialized(self)  # values used as concrete values while recording
        self._barriers: list[Barrier] = []

    @property
    def graph(self) -> Graph:
        return self.recorder.graph

    # -- enter and exit --------------------------------------------------------------------------
    def __enter__(self) -> "Tracer":
        frame = user_frame(2)
        warn_abandoned(context.discard_abandoned(frame))
        if current_tracer() is not None:
            raise NestedTraceError("a trace cannot be opened inside another trace (sessions are not supported yet)",
                                   where_now())
        self._lock = context.model_lock(self.model)
        self._lock.acquire()  # another thread tracing this model waits for this trace
        self._locked = True
        try:
            self._frame = FrameSnapshot(frame)
            self.info = BlockInfo(frame)
            self._session = current_session()
            implicit = self._implicit_invoke()  # encoded before the trace is open: a bad input fails alone
            self._open = True
            context.push_tracer(self)
            for edit in self.model._edits:  # editing.StoredEdit, FailedEdit
                edit.replay(self)
            if implicit is not None:
                self._implicit = True
                self.recorder.invokes.append(implicit)
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        stopped = False
        if exc is not None:
            hint_mlx_function(exc)
            stopped = issubclass(exc_type, StopTrace)
        try:
            if exc_type is None or stopped:
                if self.workers is not None:
                    self.workers.run()
                self._finish()
            else:
                self._frame.revert(keep=(self,))
        except BaseException:
            self._frame.revert(keep=(self,))
            raise
        finally:
            self._close()
        return stopped

    @property
    def block_frame(self) -> Any:
        """The user's frame running this block while it is open (``context.discard_abandoned``)."""
        return self._frame.frame if self._open else None

    @property
    def block_line(self) -> int | None:
        return self.info.line if self.info is not None else None

    def abandon(self) -> None:
        """Release a block left without its ``__exit__``: nothing of it runs, nothing is pushed."""
        self._close()

    def _close(self) -> None:
        """Leave nothing behind: the trace is closed, off this thread's stack, the model unlocked."""
        self._open = False
        if self.info is not None:
            self.info.frame = None  # as nnsight: the live frame is only the block's while it runs
        if self.workers is not None:
            self.workers.release()
        try:
            context.pop_tracer(self)
        finally:
            if self._locked:
                self._locked = False
                self._lock.release()

    def _implicit_invoke(self) -> Invoke | None:
        """The trace's own input as its only invoke (nnsight refuses more): the whole batch, so
        its reads need no row view."""
        if not (self._inputs or self._kwargs):
            return None
        data, _ = self.batcher.add(self._inputs, self._kwargs)
        return self._add_invoke(data, None)

    def check_open(self) -> None:
        if not self._open:
            raise ExpiredProxyError("this value belongs to a trace that has finished; only values "
                                    "marked with .save() leave the trace", where_now())

    # -- what the block calls --------------------------------------------------------------------
    def invoke(self, *inputs: Any, **kwargs: Any) -> Invoke:
        """Add an input's rows to the batch; ``invoke()`` with no input addresses the whole batch."""
        self.check_open()
        if self._implicit:
            raise ValueError("Cannot invoke while the model is already running.")
        if not inputs and not kwargs:
            return self._add_invoke(None, None)
        data, rows = self.batcher.add(inputs, kwargs)
        return self._add_invoke(data, rows)

    def _add_invoke(self, data: Any, rows: tuple[int, int] | None) -> Invoke:
        invoke = Invoke(self, data, len(self._invokes), rows)
        self._invokes.append(invoke)
        return invoke

    @property
    def iter(self) -> StepIndexer:
        """``for step in tracer.iter[a:b]`` (ints, slices, lists): reads in the body bind to that step."""
        return StepIndexer(self)

    def all(self) -> Steps:
        """Every step: the same as ``tracer.iter[:]``."""
        return self.iter[:]

    def edit_steps(self) -> int:
        """How many steps a stored edit's open ``iter[:]`` loop is replayed for: a trace's one."""
        return 1

    def step_count(self) -> int:
        """How many calls an open ``iter[:]`` covers: the most any module is called."""
        structure = self.recorder.current_invoke().structure()
        return max((p.call for p in structure.order), default=0) + 1

    @property
    def result(self) -> Any:
        """What the traced call returns: the model output (trace), the token ids (generate)."""
        return self.recorder.read("", "output")

    def stop(self) -> None:
        """End this invoke's block here, and the run after the value it last asked for (as nnsight:
        sibling invokes are served up to that point, not past it)."""
        self.check_open()
        self.recorder.record_stop()
        raise StopTrace()

    def barrier(self, n: int) -> Barrier:
        """nnsight's barrier: from here on the trace's invoke bodies run as workers meeting at their
        barriers (``workers``), so a value one body hands another at a barrier is the one it held there."""
        self.check_open()
        if self.workers is None:
            self.workers = Workers(self)
        barrier = Barrier(n, self.workers)
        self._barriers.append(barrier)
        return barrier

    def cache(self, modules: Any = None, device: Any = None, dtype: Any = None, detach: bool = True,
              include_output: bool = True, include_inputs: bool = False, non_blocking: bool = False) -> Cache:
        """Cache every (or the given) module's post-intervention output (and inputs) in this trace
        (``cache.Caches.request``)."""
        self.check_open()
        if self._caches is None:
            self._caches = Caches()
        cache = self._caches.request(self.recorder, self.model, modules, dtype, include_output, include_inputs)
        return self._saved.setdefault(id(cache), cache)

    def save(self, obj: Any) -> None:
        self.check_open()
        self._saved[id(obj)] = obj

    # -- compile and run -------------------------------------------------------------------------
    def run_graph(self, nodes: list[Node], final: bool = False) -> list:
        """Compile the graph for ``nodes`` (validating all of it) and run it in one forward: the
        block's own run (``final``), or a run while recording, for a value needed then."""
        if not self.batcher.datas:
            raise ValueError(NO_INPUT)
        batch = self.batcher.batch()
        size = self.batcher.fix_size(batch)
        structure = self.structure_for(batch)
        # observed from outside: run it all, even with nothing saved
        whole = (self.model.whole_forward or final and self.observed(batch)) and not self.scan
        schedule = self.driver.compiler.compile(self.graph, structure, nodes, self.materialized.checks(),
                                                self.stop_early and not whole, whole)
        if (not nodes and not whole) or self.scan:  # validated; nothing is computed
            return []
        return self.execute(schedule, nodes, batch, size, final)

    def observed(self, batch: Any) -> bool:
        """Whether the block's run has effects the caller sees besides its saved values (as on
        nnsight, where the model always runs): state of the caller's that the forward writes."""
        return self.driver.writes_caller_state(batch)

    def execute(self, schedule: Any, nodes: list[Node], batch: Any, size: int, final: bool = False) -> list:
        if not final:  # a run while recording leaves the caller's state (a KV cache) as it was
            batch = self.driver.read_only(batch)
        self.model.dispatch()  # the first run reads the weights (scan never does)
        runner = Runner(schedule, self.driver.modules(), size, self.recorder.instrumented, self.single_call)
        env = runner.run(self.forward(runner, batch))
        return [env.get(n.index, NEVER_REACHED) for n in nodes]

    def structure_for(self, batch: Any) -> Structure:
        """The hook points of the run on ``batch`` (generation: of every step)."""
        instrumented = self.recorder.instrumented
        return self._structure.get(batch, instrumented, lambda: self.driver.structure(batch, instrumented))

    def forward(self, runner: Runner, batch: Any) -> Callable[[], Any]:
        """What the runner runs (generation: the whole decoding loop)."""
        return self.driver.forward(batch)

    # -- push ------------------------------------------------------------------------------------
    def _finish(self) -> None:
        if not self._invokes:
            raise ValueError(NO_INPUT)
        if self._barriers:
            Barrier.check(self._barriers)
        if self._caches is not None:
            self._caches.fill(hook_order(self.graph, self.structure_for(self.batcher.batch())), self.recorder.slot)
        self._pushed = hand_back(self._frame, self._saved, self.holds_proxy, self._compute, self._session,
                                 evaluate=not self.scan, keep=(self,))

    def _compute(self, outputs: list) -> tuple[Callable[[Any], Any], list]:
        """Run the graph for every proxy inside ``outputs`` and the caches (nothing is evaluated): a
        function replacing them by their values, and the values."""
        caches = self._caches
        if caches is not None:
            outputs = outputs + caches.values()
        proxies = proxies_in(outputs, self.recorder)
        values = self.run_graph([p.node for p in proxies], final=True)  # validates even when nothing is saved
        if self.scan:  # shapes and dtypes only, as nnsight's scan gives fake tensors
            values = [skeleton(p._meta) for p in proxies]
        else:
            values = self.cut_unmade(proxies, values)
        resolve = substitute(proxies, values)
        if caches is not None:
            caches.resolve(resolve)
        return resolve, values

    def holds_proxy(self, value: Any) -> bool:
        return holds(value, self.recorder.owns)

    # -- steps the run never made ------------------------------------------------------------------
    def fillable(self) -> list:
        """The lists and dicts the block fills for its caller: the saved ones. (Not the caller's other
        lists: Python fills those too, e.g. ``warnings.catch_warnings(record=True)``, run or not.)"""
        return [v for v in self._saved.values() if is_container(v)]

    def reached(self, point: HookPoint) -> bool:
        """Whether the last run made ``point``, where only running tells (``steps_known`` off: a
        generation ending at its end-of-sequence token)."""
        return True

    def cut_unmade(self, proxies: list[Proxy], values: list) -> list:
        """As nnsight, where a loop asking for a step the run never makes is cut short there: what
        each invoke recorded from that step on did not happen. Its values are never reached, and the
        containers it filled are as they were when it asked for that step's first value."""
        cuts: dict[int | None, Any] = {}
        for mark in self.recorder.step_marks:
            if mark.invoke not in cuts and not self.reached(mark.point):
                cuts[mark.invoke] = mark
        if not cuts:
            return values
        for mark in cuts.values():
            for container, size in mark.containers:
                if len(container) > size:
                    if isinstance(container, list):
                        del container[size:]
                    else:
                        for key in list(container)[size:]:
                            del container[key]
        owner = self.recorder.first_reader
        return [NEVER_REACHED if (mark := cuts.get(_owner(p.node, owner))) is not None and p.node.index >= mark.nodes
                else v for p, v in zip(proxies, values)]
