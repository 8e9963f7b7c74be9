"""Building a trace's graph: what proxies and envoys record while the block runs.

The ``Recorder`` is the recording surface of one trace. Proxies hold it (``proxy._recorder``) and
envoys reach it through the open trace. It serves module values (one proxy per hook point and
invoke, narrowed to the invoke's rows), turns reads, writes, swaps, skips, module calls and
gradients into nodes, knows each node's shape and dtype while recording, and replays stored edits.
Nothing runs here: running is the tracer's job.
"""

from __future__ import annotations

import sys
import warnings
from fractions import Fraction
from typing import TYPE_CHECKING, Any, NamedTuple

import mlx.core as mx

from . import context
from .batching import RowSlice
from .errors import ExpiredProxyError, ModuleNotCalledError, OutOfOrderError, TraceError, Where, where_now
from .frames import holds
from .graph import POINT_OPS, Graph, HookPoint, ModuleCall, Node, format_node, map_nodes
from .hooks import observing
from .proxy import UNKNOWN, NodeRef, Proxy, constant, map_proxies
from .runner import Evaluator
from .source import SEP, drilled
from .structure import Structure, StructureRecorder, meta_of

if TYPE_CHECKING:
    from .tracer import Invoke, Tracer


class GradBind(NamedTuple):
    """What a ``.grad`` proxy's in-place edits reach: that gradient, in that backward pass."""

    target: tuple
    dep: Node
    loss: Node


class StopTrace(Exception):
    """Raised by ``tracer.stop()``: the rest of the block is not run (nnsight's early stop)."""


class LoopEnded(StopTrace):
    """An open ``tracer.iter[:]`` loop asked for a step the run never makes: as in nnsight, the
    block ends there (with a warning) and the code after the loop does not run."""


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
        self.loss: Node | None = None
        self._slots: dict[HookPoint, Proxy] = {}  # the whole-batch proxy of each hook point read
        self._served: dict[tuple[HookPoint, int], Proxy] = {}  # what each invoke sees there
        # per invoke: the furthest hook point requested so far (its forward position, the point, where)
        self._furthest: dict[int, tuple[int, HookPoint, Where | None]] = {}
        self._skipped: dict[int, set[str]] = {}  # per invoke: the modules skipped
        # where a tracer.stop() ends the run: (forward position, hook point); nothing later is reached
        self._stop: tuple[int, HookPoint | None] | None = None
        self._evaluator: Evaluator | None = None  # made on the first operation recorded on a proxy

    # -- what proxies ask of their trace -------------------------------------------------------
    def check_open(self) -> None:
        self.tracer.check_open()

    def save(self, obj: Any) -> None:
        self.tracer.save(obj)

    def materialize(self, proxy: Proxy) -> Any:
        return self.tracer.materialize(proxy)

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
            meta = self._meta(node, (args, kwargs), context, where)
        return Proxy(self, node, meta, label)

    def _meta(self, node: Node, args_kwargs: tuple, context: str, where: Where | None) -> Any:
        """The node's value on placeholders: its structure, shape and dtype (nothing is computed)."""
        unknown: list = []
        metas = map_proxies(args_kwargs, lambda p: unknown.append(p) or p._meta if p._meta is UNKNOWN else p._meta)
        if any(p._meta is UNKNOWN for p in unknown):
            return UNKNOWN
        if isinstance(node.target, RowSlice):  # the batch size is only known at exit
            return metas[0][0] if node.op == "put" else UNKNOWN
        if self._evaluator is None:
            self._evaluator = Evaluator(self.tracer.driver.modules())
        try:
            return self._evaluator.evaluate(node, metas[0], metas[1])
        except TraceError:
            raise
        except Exception as e:
            rederived = self.rederive(node)  # an input recorded before a longer invoke widened the batch
            if rederived is not UNKNOWN:
                return rederived
            if isinstance(e, IndexError):
                if self.tracer.example_shapes:  # an index past an edit's example input: checked when it runs
                    return UNKNOWN
                raise
            what = context or f"recording `{format_node(node)}`"
            raise TraceError(f"{type(e).__name__} while {what}: {e}", where) from e

    def rederive(self, node: Node) -> Any:
        """``node``'s meta on the batch as it is now (``UNKNOWN`` if it cannot be had that way).

        An invoke's values are as wide as the batch was when they were recorded; nnsight pads every
        invoke's rows to the whole batch, so a later, longer invoke widens the values of earlier
        ones. Their metas are re-derived from the hook points on demand, when a shorter one meets a
        wider one (a write, an operation between invokes)."""
        tracer = self.tracer
        if not tracer.batcher.datas:
            return UNKNOWN
        batch = tracer.batcher.batch()
        structure, size = tracer.structure_for(batch), tracer.batcher.driver.rows(batch)
        needed, stack = set(), [node]
        while stack:
            n = stack.pop()
            if n.index not in needed:
                needed.add(n.index)
                stack.extend(n.inputs())
        metas: dict[int, Any] = {}
        try:
            for n in (self.graph.nodes[i] for i in sorted(needed)):
                args, kwargs = map_nodes((n.args, n.kwargs), lambda d: metas[d.index])
                if n.op == "read":
                    value = structure.meta(n.target)
                elif n.op in ("view", "put") and isinstance(n.target, RowSlice):
                    spec = RowSlice(n.target.start, n.target.stop, size)
                    value = spec.get(args[0]) if n.op == "view" else spec.put(args[0], args[1])
                elif n.op in ("call_function", "call_method", "call_module", "view", "put"):
                    value = self._evaluator.evaluate(n, args, kwargs)
                else:
                    return UNKNOWN
                metas[n.index] = value
        except Exception:
            return UNKNOWN
        return metas[node.index]

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
            slot = Proxy(self, node, UNKNOWN, point.label())
            slot._binds.append(point)
            self._slots[point] = slot
        return slot

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
            where = where_now()
            position = structure.order.get(point) if hosted is None else self._hosted_position(point, structure)
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
        _check_same_shape(label, current, value)
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
        elif isinstance(bind, GradBind):
            self.record("set_grad", bind.target, (NodeRef(bind.dep), NodeRef(bind.loss), proxy), meta=proxy._meta)
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
        _check_same_shape(f"{out_point.module} (skipped)", current, value)
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
        structure = Structure()
        observer = StructureRecorder({id(m): p for p, m in mlx_modules.items()}, structure)
        observer.counts.update(self._hosted_calls(watched))  # the calls earlier hooked calls made
        with observing(list(mlx_modules.values()), observer):
            proxy = self.record(op, target, args, kwargs)
        for point in structure.order:
            self.graph.hosted[point] = (proxy.node, structure.skeletons[point])
        return proxy

    def hook_order(self, structure: Structure) -> dict[HookPoint, Any]:
        """Every hook point this trace's run makes, by its position: the forward's and the hosted."""
        if not self.graph.hosted:
            return structure.order
        order = dict(structure.order)
        order.update((p, self._hosted_position(p, structure)) for p in self.graph.hosted)
        return order

    def _hosted_position(self, point: HookPoint, structure: Structure) -> Any:
        """Where a hosted point comes in the forward, as the compiler places it: just before the
        point its hooked call's arguments come from, after the points hosted there earlier."""
        order = structure.order

        def latest(node: Node, memo: dict) -> int | None:
            if node.index not in memo:
                if node.op == "read":
                    memo[node.index] = order.get(node.target)
                else:
                    found = [p for p in (latest(d, memo) for d in node.deps) if p is not None]
                    memo[node.index] = max(found, default=None)
            return memo[node.index]

        memo: dict[int, Any] = {}
        host = self.graph.hosted[point][0]
        at = latest(host, memo) or 0
        earlier = [p for p, (h, _) in self.graph.hosted.items() if (latest(h, memo) or 0) == at]
        n = earlier.index(point) + 1
        return at - 1 + Fraction(n, n + 1)

    def _hosted_calls(self, paths: Any) -> dict[str, int]:
        """How many calls of each of ``paths`` the hooked calls recorded so far make."""
        counts: dict[str, int] = {}
        for point in self.graph.hosted:
            if point.path in paths and point.kind == "output":
                counts[point.path] = max(counts.get(point.path, 0), point.call + 1)
        return counts

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
        self._check_before_stop(position, point)
        self._check_order(invoke.index, position, point, where)
        return structure.callees[path]

    # -- gradients -----------------------------------------------------------------------------
    def set_loss(self, loss: Proxy, gradient: Any = None) -> None:
        """``loss.backward()``: later ``.grad`` reads and writes belong to this loss's backward pass.
        Each call is its own backward (gradients do not accumulate across them)."""
        if gradient is not None:
            loss = (loss * gradient).sum()
        elif isinstance(loss._meta, mx.array) and loss._meta.size != 1:
            raise TraceError("backward() needs a scalar loss (or gradient=...), got shape "
                             f"{tuple(loss._meta.shape)}", where_now())
        self.loss = loss.node

    def _grad_target(self, proxy: Proxy) -> tuple[tuple, Node]:
        """What ``proxy.grad`` differentiates with respect to: for a module value (or a view of one)
        the value the forward continues with at the hook point, narrowed by the views; else the node."""
        if self.loss is None:
            raise TraceError("read .grad after calling backward() on a loss in this trace", where_now())
        chain, root = [], proxy
        while root._view is not None:
            base, spec, _ = root._view
            chain.append(spec)
            root = base
        points = [b for b in root._binds if isinstance(b, HookPoint)]
        if points:
            dep = next(n for n in self.graph.nodes if n.op == "read" and n.target == points[0])
            return ("slot", points[0], tuple(reversed(chain))), dep
        return ("node", None, ()), proxy.node

    def grad_of(self, proxy: Proxy) -> Proxy | None:
        """A proxy for d(loss)/d(proxy) in the latest backward pass; ``None`` before any
        ``backward()``, as nnsight gives there: torch's ``.grad`` of a non-leaf tensor."""
        if self.loss is None:
            warnings.warn(f"{proxy._label}.grad was read before any backward() in this trace: it is None, as "
                          "torch's .grad of a non-leaf tensor is (read it after loss.backward() or inside "
                          "`with loss.backward():`)", UserWarning, stacklevel=3)
            return None
        target, dep = self._grad_target(proxy)
        grad = self.record("grad", target, (NodeRef(dep), NodeRef(self.loss)), label=f"{proxy._label}.grad",
                           meta=proxy._meta)
        grad._binds.append(GradBind(target, dep, self.loss))  # ``x.grad[:, 0] = 0`` edits the gradient
        return grad

    def set_grad(self, proxy: Proxy, value: Any) -> None:
        """``proxy.grad = value``: the gradient flowing on from ``proxy`` becomes ``value``."""
        target, dep = self._grad_target(proxy)
        value = self.as_proxy(value)
        _check_same_shape(f"{proxy._label}.grad", proxy, value)
        self.record("set_grad", target, (NodeRef(dep), NodeRef(self.loss), value), label=f"{proxy._label}.grad",
                    meta=value._meta)

    # -- edits ---------------------------------------------------------------------------------
    def replay(self, edit: Graph, steps: int = 1) -> None:
        """Copy an edit's nodes into this graph, wiring its reads and writes to this trace's slots.
        The body of an open ``tracer.iter[:]`` loop in the edit is copied again for each later step
        of the ``steps`` this run makes, as nnsight's edit runs its loop at every step."""
        placed: dict[HookPoint, HookPoint] = {}
        new = self._copy(edit, edit.nodes, {}, 0, placed)
        for start, end, step in edit.open_loops:
            for later in range(step + 1, steps):
                self._copy(edit, edit.nodes[start:end], dict(new), later - step, placed)

    def _copy(self, edit: Graph, nodes: list[Node], new: dict[int, Node], later: int,
              placed: dict[HookPoint, HookPoint]) -> dict[int, Node]:
        """Copy ``nodes`` of ``edit`` (``new``: the copies of its nodes so far, by index), their hook
        points ``later`` calls on; the points their hooked calls host follow those hosted here."""
        indices = {n.index for n in nodes}
        own = [p for p, (host, _) in edit.hosted.items() if host.index in indices]
        first: dict[str, int] = {}
        for point in own:
            first[point.path] = min(first.get(point.path, point.call), point.call)
        shift = self._hosted_calls(first)
        for point in own:
            placed[point] = point._replace(call=point.call - first[point.path] + shift.get(point.path, 0))
        hosted = set(own)

        def moved(point: HookPoint) -> HookPoint:
            if point in hosted or point in edit.hosted:
                return placed[point]
            return point._replace(call=point.call + later) if later else point

        for node in nodes:
            args, kwargs = map_nodes((node.args, node.kwargs), lambda n: new[n.index])
            target = moved(node.target) if node.op in POINT_OPS else node.target
            if node.op == "read":
                new[node.index] = self.slot(target).node
            elif node.op == "write":
                slot = self.slot(target)
                slot._node = args[0]
                slot._version += 1
                new[node.index] = self.emit("write", target, args, kwargs, where=node.where)
            else:
                new[node.index] = self.emit(node.op, target, args, kwargs, where=node.where)
        for point in own:
            self.graph.hosted[placed[point]] = (new[edit.hosted[point][0].index], edit.hosted[point][1])
        return new


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


def _check_same_shape(label: str, current: Any, value: Proxy) -> None:
    a = getattr(current, "_meta", UNKNOWN)
    b = value._meta
    if _same_shape(a, b):
        return
    if isinstance(current, Proxy):  # recorded on a narrower batch than the other: both as they are now
        wide_a, wide_b = current._recorder.rederive(current.node), value._recorder.rederive(value.node)
        if _same_shape(wide_a, wide_b) and isinstance(wide_b, mx.array):
            current._meta, value._meta = wide_a, wide_b
            return
    if isinstance(a, mx.array) and isinstance(b, mx.array):
        raise TraceError(f"shape mismatch assigning to {label}: it has shape {tuple(a.shape)}, "
                         f"the new value has shape {tuple(b.shape)}", where_now())


def _same_shape(a: Any, b: Any) -> bool:
    return not (isinstance(a, mx.array) and isinstance(b, mx.array)) or tuple(a.shape) == tuple(b.shape)
