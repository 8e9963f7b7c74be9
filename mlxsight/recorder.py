"""Building a trace's graph: what proxies and envoys record while the block runs.

The ``Recorder`` is the recording surface of one trace. Proxies hold it (``proxy._recorder``) and
envoys reach it through the open trace. It serves module values (one proxy per hook point and
invoke, narrowed to the invoke's rows), turns reads, writes, swaps, skips, module calls and
gradients into nodes (``gradients``), and knows each node's shape and dtype while recording
(``metas``); hooked calls' hook points are ``hosting``'s, stored edits ``editing``'s. Nothing runs
here: running is the tracer's job.
"""

from __future__ import annotations

import sys
import warnings
from typing import TYPE_CHECKING, Any, NamedTuple

from . import context
from .batching import RowSlice
from .errors import ExpiredProxyError, ModuleNotCalledError, OutOfOrderError, TraceError, Where, where_now
from .frames import holds
from .gradients import Gradients
from .graph import Graph, HookPoint, ModuleCall, Node
from .hosting import hosted_position, record_hooked
from .metas import Metas, check_same_shape
from .proxy import UNKNOWN, Proxy, constant, map_proxies
from .source import SEP, drilled
from .structure import meta_of

if TYPE_CHECKING:
    from .tracer import Invoke, Tracer


class StopTrace(Exception):
    """Raised by ``tracer.stop()``: the rest of the block is not run (nnsight's early stop)."""


class LoopEnded(StopTrace):
    """An open ``tracer.iter[:]`` loop asked for a step the run never makes: as in nnsight, the
    block ends there (with a warning) and the code after the loop does not run."""


class StepMark(NamedTuple):
    """Where the recording was when an invoke first asked for a value of a later step: what a run
    that never makes that step must not have done. nnsight runs the body alongside the model, so a
    body asking for a value of a step the run does not make waits there for good: nothing after that
    request happens (a generation ending at its end-of-sequence token)."""

    invoke: int | None  # the invoke asking (None: outside every invoke)
    point: HookPoint  # the value asked for
    nodes: int  # the graph's length then: the invoke's later nodes come after the cut
    containers: tuple  # (list or dict, its length then): what the body filled after it


class Recorder:
    """Records one trace block into ``graph``."""

    def __init__(self, tracer: "Tracer") -> None:
        self.tracer = tracer
        self.graph = Graph()
        self.invokes: list["Invoke"] = []  # the invokes whose blocks are open, innermost last
        self.step = 0  # the call (generation step) that plain reads bind to; pinned by iter
        self.beyond: int | None = None  # the step an open iter loop waits for in vain
        self.looping = 0  # how many iter loops are open around the current line
        self.instrumented: frozenset[str] = frozenset()  # modules whose .source is used
        self._slots: dict[HookPoint, Proxy] = {}  # the whole-batch proxy of each hook point read
        self._served: dict[tuple[HookPoint, int], Proxy] = {}  # what each invoke sees there
        # per invoke: the furthest hook point requested so far (its forward position, the point, where)
        self._furthest: dict[int, tuple[int, HookPoint, Where | None]] = {}
        self._skipped: dict[int, set[str]] = {}  # per invoke: the modules skipped
        # where a tracer.stop() ends the run: (forward position, hook point); nothing later is reached
        self._stop: tuple[int, HookPoint | None] | None = None
        self.metas = Metas(tracer)
        self._gradients: Gradients | None = None
        self.step_marks: list[StepMark] = []  # requests of later steps' values, when steps are not known
        # a read node is the whole batch's, of no invoke: the invoke whose request recorded it
        self.first_reader: dict[int, int | None] = {}

    # -- what proxies ask of their trace -------------------------------------------------------
    def check_open(self) -> None:
        self.tracer.check_open()

    def save(self, obj: Any) -> None:
        self.tracer.save(obj)

    def materialize(self, proxy: Proxy) -> Any:
        """``proxy``'s value now (``materialize``): the graph so far runs as far as it needs."""
        self.check_open()
        return self.tracer.materialized.value(proxy.node)

    def owns(self, value: Any) -> bool:
        """Whether ``value`` is one of this trace's proxies."""
        return isinstance(value, Proxy) and value._recorder is self

    # -- nodes ---------------------------------------------------------------------------------
    def current_invoke(self) -> "Invoke":
        if not self.invokes:
            raise TraceError("module values can only be read inside `with tracer.invoke(...)` "
                             "when trace() is given no input", where_now())
        return self.invokes[-1]

    def row_view(self) -> RowSlice | None:
        """The open invoke's rows of a batched value (None: the whole batch)."""
        rows = self.invokes[-1].rows if self.invokes else None
        return None if rows is None else self.tracer.batcher.narrow(rows)

    def _invoke_index(self) -> int | None:
        return self.invokes[-1].index if self.invokes else None

    def emit(self, op: str, target: Any, args: tuple = (), kwargs: dict | None = None,
             invoke: int | None = None, where: Where | None = None) -> Node:
        return self.graph.create(op, target, args, kwargs, where or where_now(), invoke)

    def record(self, op: str, target: Any, args: tuple, kwargs: dict | None = None,
               label: str = "", context: str = "", meta: Any = UNKNOWN) -> Proxy:
        """Add a node computing ``target`` on ``args`` and return a proxy for its result."""
        self.check_open()
        kwargs = kwargs or {}
        where = where_now()
        if "torch" in sys.modules:  # nnsight scripts mix torch tensors in: constants become MLX arrays
            from .torch_ops import to_mlx

            args, kwargs = to_mlx((args, kwargs))
        node_args = map_proxies((args, kwargs), lambda p: self.own(p).node)
        node = self.graph.create(op, target, node_args[0], node_args[1], where, self._invoke_index())
        if meta is UNKNOWN:
            meta = self.metas.of(node, (args, kwargs), context, where)
        return Proxy(self, node, meta, label)

    def own(self, proxy: Proxy) -> Proxy:
        """``proxy``, if it belongs to this trace. One that escaped another trace (kept on an object,
        a global...) is refused at the user's line: its node means nothing in this graph."""
        if proxy._recorder is self:
            return proxy
        label = proxy._label
        if not proxy._recorder.tracer._open:
            raise ExpiredProxyError(f"{label} belongs to a trace that has finished: only values marked with .save() "
                                    f"leave a trace (as plain arrays). Save it there, or read it again in this trace",
                                    where_now())
        raise TraceError(f"{label} belongs to another open trace: a value cannot move between traces (save it "
                         f"there and use the saved array)", where_now())

    def as_proxy(self, value: Any) -> Proxy:
        if isinstance(value, Proxy):
            return self.own(value)
        map_proxies(value, self.own)  # refuse escaped proxies inside containers too
        if "torch" in sys.modules:
            from .torch_ops import to_mlx

            value = to_mlx(value)
        if holds(value, self.owns):
            return self.record("call_function", constant, (value,))
        node = self.emit("call_function", constant, (value,), invoke=self._invoke_index())
        return Proxy(self, node, value)

    def _mark_request(self, point: HookPoint) -> None:
        """The open invoke asks for a value of a later step: remember how far the recording is
        (``StepMark``), with the lengths of the saved containers."""
        containers = tuple((c, len(c)) for c in self.tracer.fillable())
        self.step_marks.append(StepMark(self._invoke_index(), point, len(self.graph), containers))

    # -- tracer.stop() ---------------------------------------------------------------------------
    @property
    def stop(self) -> HookPoint | None:
        """The hook point a ``tracer.stop()`` ends the run after (``None``: no stop, or before any)."""
        return self._stop[1] if self._stop is not None else None

    def record_stop(self) -> None:
        """``tracer.stop()`` in the current invoke: as in nnsight, the run ends after the point this
        invoke last asked for; that visit completes (siblings parked there are served), no later one
        happens. The earliest of several stops wins."""
        if not self.invokes:
            return  # outside every invoke: the block just ends
        furthest = self._furthest.get(self.current_invoke().index)
        stop = (furthest[0], furthest[1]) if furthest is not None else (-1, None)
        if self._stop is None or stop[0] < self._stop[0]:
            self._stop = stop

    def _check_before_stop(self, position: int | None, point: HookPoint) -> None:
        """A request the stopped run never serves: nnsight's verdict on a worker left waiting. A loop
        past step 0 was cut short (a warning; the code after the loop does not run); anything else
        is an ``OutOfOrderError``."""
        if self._stop is None or position is None or position <= self._stop[0]:
            return
        if self.step > 0:
            warnings.warn(f"'{point}' was never reached: the loop asked for a step the run did not make, so it "
                          f"was cut short (a tracer.stop() ended the run at '{self._stop[1]}') - values saved "
                          f"inside the loop are kept, and the statements after it did not run", UserWarning,
                          stacklevel=4)
            raise LoopEnded()
        raise OutOfOrderError(f"'{point}' was requested but the model already ran past it: a tracer.stop() ends "
                              f"the run at '{self._stop[1]}'", where_now())

    # -- module values -------------------------------------------------------------------------
    def slot(self, point: HookPoint, where: Where | None = None) -> Proxy:
        """The whole-batch proxy of ``point`` (one ``read`` node, recorded on first use)."""
        slot = self._slots.get(point)
        if slot is None:
            node = self.emit("read", point, where=where)
            if not self.tracer.steps_known:  # only a cut short run needs it (``Tracer.cut_unmade``)
                self.first_reader[node.index] = self._invoke_index()
            slot = Proxy(self, node, UNKNOWN, point.label())
            slot._binds.append(point)
            self._slots[point] = slot
        return slot

    def rewrite(self, point: HookPoint, args: tuple, kwargs: dict, where: Where | None) -> Node:
        """A ``write`` of ``point`` copied from a stored edit: the slot holds the written value on."""
        slot = self.slot(point)
        slot._node = args[0]
        slot._version += 1
        return self.emit("write", point, args, kwargs, where=where)

    def _served_value(self, path: str, kind: str) -> tuple[Proxy, tuple]:
        self.check_open()
        invoke = self.current_invoke()
        if self.beyond is not None and self.step == self.beyond:
            warnings.warn(f"'{HookPoint(path, kind, self.step)}' was never reached: the loop asked for a "
                          f"step the run did not make, so it was cut short (nnsight's behaviour: the code "
                          f"after an open `tracer.iter[:]` loop does not run)", UserWarning, stacklevel=3)
            raise LoopEnded()
        hook_kind = "input" if kind in ("input", "inputs") else kind
        point = HookPoint(path, hook_kind, 0 if kind == "result" else self.step)
        key = (point, invoke.index)
        proxy = self._served.get(key)
        if proxy is None:
            structure = invoke.structure()
            hosted = self.graph.hosted.get(point)
            if point not in structure.skeletons and hosted is None:
                name = ".".join(p for p in ("model", path) if p)
                calls = structure.calls(path)
                if point.call > 0 and calls and self.looping:
                    # a loop that outruns the run, bounded or open, ends as nnsight's does: a warning,
                    # the values from the steps made kept, the code after the loop not run
                    warnings.warn(f"'{point}' was never reached: the loop asked for a step the run did not "
                                  f"make ({name} runs {calls} time(s)), so it was cut short", UserWarning,
                                  stacklevel=4)
                    raise LoopEnded()
                if point.call > 0 and calls:
                    raise OutOfOrderError(f"'{point}' is never reached: {name} runs {calls} time(s) in this "
                                          f"trace (steps 0-{calls - 1})", where_now())
                if SEP in path:
                    raise OutOfOrderError(f"'{point}' is never reached: that operation does not run in this "
                                          f"forward (or not that many times)", where_now())
                raise ModuleNotCalledError(
                    f"{name} is never called by this model's forward, so it has no .{kind}", where_now())
            if point.call > 0 and not self.tracer.steps_known:
                self._mark_request(point)
            where = where_now()
            position = structure.order.get(point) if hosted is None else hosted_position(self.graph, point, structure)
            if self.tracer.workers is not None:  # a body run as a worker waits for the forward to get here
                self.tracer.workers.reach(position, point)
            if self._stop is not None:
                self._check_before_stop(position, point)
            self._check_order(invoke.index, position, point, where)
            meta = structure.meta(point) if hosted is None else meta_of(hosted[1])
            view = invoke.view()
            if view is not None:
                meta = view.get(meta)
            slot = self.slot(point, where)
            if invoke.rows is None:
                if slot._meta is UNKNOWN:
                    slot._meta = meta
                proxy = slot
            else:
                proxy = slot._make_view(self.tracer.batcher.narrow(invoke.rows), point.label())
                proxy._meta = meta
            self._served[key] = proxy
        return proxy, key

    def _check_order(self, invoke: int, position: int | None, point: HookPoint, where: Where | None) -> None:
        """nnsight's rule: within one invoke, values are requested in the order the forward makes
        them; a request for one the model has already run past is an ``OutOfOrderError``."""
        skipped = self._skipped.get(invoke)
        if position is None or point.kind == "result" or skipped and any(
                point.path.startswith(path + ".") for path in skipped):
            return  # inside a skipped module: the skip's own error says more
        furthest = self._furthest.get(invoke)
        if furthest is None or position > furthest[0]:
            self._furthest[invoke] = (position, point, where)
            return
        if position < furthest[0] and not context.settings.relaxed_order:
            first = f" (requested at {furthest[2]})" if furthest[2] is not None else ""
            raise OutOfOrderError(
                f"'{point}' was requested but the model already ran past it: '{furthest[1]}' comes later in "
                f"the forward and was requested first{first}. Request values in forward order within an "
                f"invoke (as nnsight requires), or opt in with mlxsight.set_relaxed_order(True)", where)

    def has_accessed(self, invoke: int) -> bool:
        """Whether invoke ``invoke`` has read or written a model value yet."""
        return invoke in self._furthest

    def read(self, path: str, kind: str) -> Any:
        """The proxy served for a module's ``output``, ``inputs`` or ``input`` in this invoke."""
        proxy, _ = self._served_value(path, kind)
        if kind == "input":
            return _first_input(proxy)
        return proxy

    def write(self, path: str, kind: str, value: Any) -> None:
        """``envoy.output = value`` (and ``.input``/``.inputs``): the forward continues with value."""
        current = self.read(path, kind)
        if value is current:
            return  # ``envoy.output += x`` assigns back the object it already edited in place
        label = current._label if isinstance(current, Proxy) else f"{path}.{kind}"
        value = self.as_proxy(value)
        check_same_shape(label, current, value)
        if kind == "input":
            parent, key = _first_input_parent(self.read(path, "inputs"))
            self._swap(current, value)
            parent._children[(type(key), key)] = value
            return
        self._swap(current, value)
        self._served[self._served_value(path, kind)[1]] = value

    def _swap(self, current: Proxy, value: Proxy) -> None:
        if current._view is None:  # the whole-batch slot itself
            for point in [b for b in current._binds if isinstance(b, HookPoint)]:
                current._binds.remove(point)
                value._binds.append(point)
                self._slots[point] = value
                self.emit("write", point, (value.node,), invoke=self._invoke_index())
            return
        base, spec, _ = current._view
        base._assign(base._record("put", spec, (base, value), context=f"assigning to {current._label}"))
        current._view = None  # earlier references keep the old object, as in nnsight
        value._binds.append((base, spec))

    def bind_write(self, bind: Any, proxy: Proxy) -> None:
        """Propagate an in-place edit of ``proxy`` to what it is bound to (a hook point or a base)."""
        if isinstance(bind, HookPoint):
            self.emit("write", bind, (proxy.node,), invoke=self._invoke_index())
        else:
            base, spec = bind
            base._assign(base._record("put", spec, (base, proxy)))

    def skip(self, path: str, value: Any) -> None:
        """``envoy.skip(value)``: the module's body does not run; its output is ``value``."""
        invoke = self.current_invoke()
        out_point = HookPoint(path, "output", 0)
        self._served_value(path, "inputs")  # the skip sits between the module's input and output
        current, key = self._served_value(path, "output")
        self._skipped.setdefault(invoke.index, set()).add(path)
        value = self.as_proxy(value)
        check_same_shape(f"{out_point.module} (skipped)", current, value)
        self.emit("skip", HookPoint(path, "input", 0), (value.node,), {"rows": invoke.rows}, invoke=invoke.index)
        self._served[key] = value

    def call_module(self, path: str, method: str | None, args: tuple, kwargs: dict, hook: bool = False,
                    foreign: Any = None) -> Proxy:
        """``model.<path>(...)`` on trace values: one node. ``foreign``: the module, when it is no MLX
        module (``auxiliary``). With ``hook`` the call is observed (nnsight's ``hook=True``): the hook
        points of the modules it runs are learned now, on the placeholders, and hosted by the node."""
        if foreign is not None:
            from .auxiliary import ForeignCall, named_modules

            op, target = "call_function", ForeignCall(foreign, path, method, hook)
            mlx_modules: dict = {}
            watched = named_modules(foreign, path)
        else:
            op, target = "call_module", ModuleCall(path, method, hook)
            modules = self.tracer.driver.modules()
            mlx_modules = watched = {p: m for p, m in modules.items() if p == path or p.startswith(path + ".")}
        if not hook:
            return self.record(op, target, args, kwargs)
        return record_hooked(self.graph, mlx_modules, watched, lambda: self.record(op, target, args, kwargs))

    def use_source(self, path: str) -> None:
        """Run ``path``'s forward instrumented, so its operations are hook points."""
        if path not in self.instrumented:
            self.instrumented = self.instrumented | {path}

    def drill(self, path: str) -> Any:
        """``<op>.source`` in the current invoke: what operation ``path`` calls there (see
        ``source.callee``). As in nnsight the drill is a request served just before the call, so it
        is ordered like the operation's input."""
        for outer in drilled(path):
            self.use_source(outer)
        invoke = self.current_invoke()
        structure = invoke.structure()
        point = HookPoint(path, "input", self.step)
        if point not in structure.skeletons:
            raise OutOfOrderError(f"'{point}' is never reached: that operation does not run in this forward "
                                  f"(or not that many times), so there is no call to drill into", where_now())
        where = where_now()
        position = structure.order.get(point)
        if self.tracer.workers is not None:
            self.tracer.workers.reach(position, point)
        self._check_before_stop(position, point)
        self._check_order(invoke.index, position, point, where)
        return structure.callees[path]

    # -- gradients ---------------------------------------------------------------------------
    @property
    def gradients(self) -> Gradients:
        """This trace's backward passes (made on first use: a plain trace pays nothing for them)."""
        if self._gradients is None:
            self._gradients = Gradients(self)
        return self._gradients


def _first_input(inputs: Proxy) -> Any:
    parent, key = _first_input_parent(inputs)
    return parent[key]


def _first_input_parent(inputs: Proxy) -> tuple[Proxy, Any]:
    args, kwargs = inputs._meta
    if len(args):
        return inputs[0], 0
    if kwargs:
        return inputs[1], next(iter(kwargs))
    raise StopIteration(f"{inputs._label} was called with no arguments")

