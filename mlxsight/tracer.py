"""The trace context: records the block into a graph, then runs it in one forward pass.

``with model.trace(inputs) as tracer:`` executes its body on proxies (nothing is computed), and on
exit compiles the graph, runs it in a single forward, evaluates only the saved values and writes
them back to the caller's variables, as nnsight 0.8 does: only saved objects are pushed.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Callable

import mlx.core as mx

from . import context
from .aliasing import Rows
from .cache import Cache, CacheEntry, cast
from .compiler import compile_graph
from .context import (  # noqa: F401 - the public names stay importable from here
    add_exit_listener, current_session, current_tracer, remove_exit_listener, save, set_torch_semantics,
    set_value_transform, torch_semantics,
)
from .errors import (
    ExpiredProxyError, ModuleNotCalledError, NestedTraceError, OutOfOrderError, TraceError, Where, user_frame, where_now,
)
from .frames import FrameSnapshot, holds
from .graph import Graph, HookPoint, Node, format_node
from .proxy import UNKNOWN, NodeRef, Proxy, apply, constant, find_tracer, map_proxies  # noqa: F401
from .runner import NEVER_REACHED, Runner, apply_op
from .source import SEP
from .structure import skeleton

if TYPE_CHECKING:
    from .model import NNsight


class StopTrace(Exception):
    """Raised by ``tracer.stop()``: the rest of the block is not run (nnsight's early stop)."""


class LoopEnded(StopTrace):
    """An open ``tracer.iter[:]`` loop asked for a step the run never makes: as in nnsight, the
    block ends there (with a warning) and the code after the loop does not run."""


class Steps:
    """The steps one ``tracer.iter[...]`` loop visits."""

    def __init__(self, tracer: "Tracer", steps: list[int], open_ended: bool = False) -> None:
        self.tracer, self.steps, self.open_ended = tracer, steps, open_ended

    def __iter__(self):
        previous = self.tracer._step
        try:
            for step in self.steps:
                self.tracer._step = step
                yield step
            if self.open_ended:  # nnsight's open loop waits for one more step, which never comes
                self.tracer._step = self.tracer._beyond = len(self.steps)
                yield len(self.steps)
        finally:
            self.tracer._step = previous
            self.tracer._beyond = None

    def __enter__(self):
        raise NotImplementedError("the block form `with tracer.iter[...]:` (deprecated in nnsight) is not "
                                  "supported; write `for step in tracer.iter[...]:`")

    def __exit__(self, *exc):
        return False


class StepIndexer:
    def __init__(self, tracer: "Tracer") -> None:
        self.tracer = tracer

    def __getitem__(self, key: Any) -> Steps:
        open_ended = isinstance(key, slice) and key.stop is None
        if isinstance(key, int):
            steps = [key]
        elif isinstance(key, slice):
            stop = key.stop if key.stop is not None else self.tracer._step_count()
            steps = list(range(key.start or 0, stop, key.step or 1))
        else:
            steps = [int(k) for k in key]
        if any(s < 0 for s in steps):
            raise ValueError("tracer.iter takes non-negative steps")
        return Steps(self.tracer, steps, open_ended and (key.step or 1) == 1)


class Barrier:
    """``b = tracer.barrier(n)``; ``b()`` in n invokes. Counts arrivals only."""

    def __init__(self, n: int) -> None:
        self.n, self.arrivals = n, 0

    def __call__(self) -> None:
        self.arrivals += 1


class BatchSize:
    """The total number of rows, known once every invoke has been seen."""

    def __init__(self) -> None:
        self.value: int | None = None

    def __int__(self) -> int:
        if self.value is None:
            raise RuntimeError("the batch size is not known yet")
        return self.value

    def __repr__(self) -> str:
        return f"BatchSize({self.value})"


class Invoke:
    """One input's rows of the batched forward; reads inside it see only those rows."""

    def __init__(self, tracer: "Tracer", data: Any, index: int, rows: tuple[int, int] | None) -> None:
        self.tracer, self.data, self.index, self.rows = tracer, data, index, rows
        self._structure = None

    def structure(self):
        key = self.tracer._instrumented
        if self._structure is None or self._structure[0] != key:
            data = [self.data] if self.data is not None else self.tracer._row_data()
            self._structure = (key, self.tracer._structure_for(self.tracer._batch_of(data)))
        return self._structure[1]

    def __enter__(self) -> "Invoke":
        self.tracer._invoke_stack.append(self)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        self.tracer._invoke_stack.pop()
        # An open iter loop ends its own invoke only: in nnsight each invoke is its own worker.
        return exc_type is not None and issubclass(exc_type, LoopEnded)


class Tracer:
    """Records a trace block as an intervention graph; runs it on exit."""

    def __init__(self, model: "NNsight", inputs: tuple, kwargs: dict, scan: bool = False) -> None:
        self.model = model
        self.scan = scan
        self._caches: list[tuple[Cache, dict]] = []
        self._session: Any = None
        self.graph = Graph()
        self._inputs, self._kwargs = inputs, kwargs
        self._open = False
        self._invokes: list[Invoke] = []
        self._invoke_stack: list[Invoke] = []
        self._rows_used = 0
        self._batch_size = BatchSize()
        self._slots: dict[HookPoint, Proxy] = {}
        self._served: dict[tuple[HookPoint, int], Proxy] = {}
        self._saved: dict[int, Any] = {}
        self._materialized: list[tuple[Node, int, Where | None]] = []
        self._frame = FrameSnapshot(None)
        self._locals: dict = {}
        self._batch_cache: tuple | None = None
        self._structure_cache: tuple | None = None
        self._implicit = False  # the trace was given an input: that input is the only invoke
        self._step = 0  # the call (generation step) that plain reads bind to; pinned by iter
        self._beyond: int | None = None  # the step an open iter loop waits for in vain
        self._loss: Node | None = None
        self._instrumented: frozenset[str] = frozenset()  # modules whose .source is used
        self._barriers: list[Barrier] = []

    # -- context -----------------------------------------------------------------------------
    def __enter__(self) -> "Tracer":
        self._session = current_session()
        if current_tracer() is not None:
            raise NestedTraceError("a trace cannot be opened inside another trace (sessions are not supported yet)",
                                   where_now())
        self._frame = FrameSnapshot(user_frame(2))
        self._open = True
        context.push_tracer(self)
        try:
            if self.model._edits:
                from .recorder import replay

                for edit in self.model._edits:
                    replay(self, edit)
            if self._inputs or self._kwargs:
                # The trace's own input is its only invoke (nnsight refuses more), so it is the whole
                # batch and its reads need no row view.
                implicit = self.invoke(*self._inputs, **self._kwargs)
                implicit.rows = None
                self._implicit = True
                self._invoke_stack.append(implicit)
        except BaseException:  # a bad input: the block never runs and __exit__ is never called
            self._open = False
            context.pop_tracer(self)
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        stopped = exc_type is not None and issubclass(exc_type, StopTrace)
        try:
            if exc_type is None or stopped:
                self._finish()
        finally:
            self._open = False
            context.pop_tracer(self)
        return stopped

    @property
    def iter(self) -> "StepIndexer":
        """``for step in tracer.iter[a:b]`` (ints, slices, lists): reads in the body bind to that step."""
        return StepIndexer(self)

    def all(self) -> "Steps":
        """Every step: the same as ``tracer.iter[:]``."""
        return self.iter[:]

    def _step_count(self) -> int:
        """How many calls an open ``iter[:]`` covers: the most any module is called."""
        structure = self.current_invoke().structure()
        return max((p.call for p in structure.order), default=0) + 1

    @property
    def result(self) -> Any:
        """What the traced call returns: the model output (trace), the token ids (generate)."""
        return self.read("", "output")

    def stop(self) -> None:
        """End the block here; the forward itself already stops after the last value needed."""
        raise StopTrace()

    def barrier(self, n: int) -> "Barrier":
        """nnsight's barrier. A graph needs none (dependencies order the work), but scripts call it,
        and nnsight's error for a barrier that too few blocks reach is kept."""
        barrier = Barrier(n)
        self._barriers.append(barrier)
        return barrier

    def cache(self, modules: Any = None, device: Any = None, dtype: Any = None, detach: bool = True,
              include_output: bool = True, include_inputs: bool = False, non_blocking: bool = False) -> Cache:
        """Cache every (or the given) module's post-intervention output (and inputs) in this trace."""
        self.check_open()
        paths = None
        if modules is not None:
            paths = {m._path if hasattr(m, "_path") else _strip_root(str(m)) for m in modules}
        cache = Cache()
        self._caches.append((cache, {"paths": paths, "dtype": dtype, "output": include_output,
                                     "inputs": include_inputs}))
        self._saved[id(cache)] = cache
        return cache

    def skip(self, path: str, value: Any) -> None:
        """``envoy.skip(value)``: the module's body does not run; its output is ``value``."""
        invoke = self.current_invoke()
        out_point = HookPoint(path, "output", 0)
        current, key = self._served_value(path, "output")
        value = self.as_proxy(value)
        _check_same_shape(f"{out_point.module} (skipped)", current, value)
        self._served_value(path, "inputs")
        self.emit("skip", HookPoint(path, "input", 0), (value.node,), {"rows": invoke.rows}, invoke=invoke.index)
        self._served[key] = value

    def invoke(self, *inputs: Any, **kwargs: Any) -> Invoke:
        """Add an input's rows to the batch; ``invoke()`` with no input addresses the whole batch."""
        self.check_open()
        if self._implicit:
            raise ValueError("Cannot invoke while the model is already running.")
        if not inputs and not kwargs:
            return self._add_invoke(Invoke(self, None, len(self._invokes), None))
        data = self.model._encode(inputs, kwargs)
        n = self.model._rows(data)
        invoke = Invoke(self, data, len(self._invokes), (self._rows_used, self._rows_used + n))
        self._rows_used += n
        return self._add_invoke(invoke)

    def _add_invoke(self, invoke: Invoke) -> Invoke:
        self._invokes.append(invoke)
        return invoke

    def _row_data(self) -> list:
        return [inv.data for inv in self._invokes if inv.data is not None]

    def current_invoke(self) -> Invoke:
        if not self._invoke_stack:
            raise TraceError("module values can only be read inside `with tracer.invoke(...)` "
                             "when trace() is given no input", where_now())
        return self._invoke_stack[-1]

    def check_open(self) -> None:
        if not self._open:
            raise ExpiredProxyError("this value belongs to a trace that has finished; only values "
                                    "marked with .save() leave the trace", where_now())

    # -- recording ---------------------------------------------------------------------------
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
        node_args = map_proxies((args, kwargs), lambda p: p.node)
        node = self.graph.create(op, target, node_args[0], node_args[1], where, self._invoke_index())
        if meta is UNKNOWN:
            meta = self._meta(node, (args, kwargs), context, where)
        return Proxy(self, node, meta, label)

    def _invoke_index(self) -> int | None:
        return self._invoke_stack[-1].index if self._invoke_stack else None

    def _meta(self, node: Node, args_kwargs: tuple, context: str, where: Where | None) -> Any:
        unknown: list = []
        metas = map_proxies(args_kwargs, lambda p: unknown.append(p) or p._meta if p._meta is UNKNOWN else p._meta)
        if any(p._meta is UNKNOWN for p in unknown):
            return UNKNOWN
        if isinstance(node.target, Rows):  # the batch size is only known at exit
            return metas[0][0] if node.op == "put" else UNKNOWN
        try:
            return apply_op(node.op, node.target, metas[0], metas[1], self.model._modules_by_path())
        except TraceError:
            raise
        except Exception as e:
            what = context or f"recording `{format_node(node)}`"
            raise TraceError(f"{type(e).__name__} while {what}: {e}", where) from e

    def as_proxy(self, value: Any) -> Proxy:
        if isinstance(value, Proxy):
            return value
        if "torch" in sys.modules:
            from .torch_ops import to_mlx

            value = to_mlx(value)
        if holds(value, self.owns):
            return self.record("call_function", constant, (value,))
        node = self.emit("call_function", constant, (value,), invoke=self._invoke_index())
        return Proxy(self, node, value)

    # -- module values -----------------------------------------------------------------------
    def _slot(self, point: HookPoint) -> Proxy:
        slot = self._slots.get(point)
        if slot is None:
            node = self.emit("read", point)
            slot = Proxy(self, node, UNKNOWN, point.label())
            slot._binds.append(point)
            self._slots[point] = slot
        return slot

    def _served_value(self, path: str, kind: str) -> tuple[Proxy, tuple]:
        self.check_open()
        invoke = self.current_invoke()
        if self._beyond is not None and self._step == self._beyond:
            import warnings

            warnings.warn(f"'{HookPoint(path, kind, self._step)}' was never reached: the loop asked for a "
                          f"step the run did not make, so it was cut short (nnsight's behaviour: the code "
                          f"after an open `tracer.iter[:]` loop does not run)", UserWarning, stacklevel=3)
            raise LoopEnded()
        hook_kind = "input" if kind in ("input", "inputs") else kind
        point = HookPoint(path, hook_kind, 0 if kind == "result" else self._step)
        key = (point, invoke.index)
        proxy = self._served.get(key)
        if proxy is None:
            structure = invoke.structure()
            if point not in structure.skeletons:
                name = ".".join(p for p in ("model", path) if p)
                calls = structure.calls(path)
                if point.call > 0 and calls:
                    raise OutOfOrderError(f"'{point}' is never reached: {name} runs {calls} time(s) in this "
                                          f"trace (steps 0-{calls - 1})", where_now())
                if SEP in path:
                    raise OutOfOrderError(f"'{point}' is never reached: that operation does not run in this "
                                          f"forward (or not that many times)", where_now())
                raise ModuleNotCalledError(
                    f"{name} is never called by this model's forward, so it has no .{kind}", where_now())
            meta = structure.meta(point)
            slot = self._slot(point)
            if invoke.rows is None:
                if slot._meta is UNKNOWN:
                    slot._meta = meta
                proxy = slot
            else:
                start, stop = invoke.rows
                proxy = slot._make_view(Rows(start, stop, self._batch_size), point.label())
                proxy._meta = meta
            self._served[key] = proxy
        return proxy, key

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
        else:
            base, spec = bind
            base._assign(base._record("put", spec, (base, proxy)))

    def set_loss(self, loss: Proxy, gradient: Any = None) -> None:
        if self._loss is not None:
            raise TraceError("one backward pass per trace is supported", where_now())
        if gradient is not None:
            loss = (loss * gradient).sum()
        elif isinstance(loss._meta, mx.array) and loss._meta.size != 1:
            raise TraceError("backward() needs a scalar loss (or gradient=...), got shape "
                             f"{tuple(loss._meta.shape)}", where_now())
        self._loss = loss.node

    def grad_of(self, proxy: Proxy) -> Proxy:
        """A proxy for d(loss)/d(proxy). For a module value (or a view of one) the gradient is taken
        at the hook point, with respect to the value the forward continues with."""
        if self._loss is None:
            raise TraceError("read .grad after calling backward() on a loss in this trace", where_now())
        chain, root = [], proxy
        while root._view is not None:
            base, spec, _ = root._view
            chain.append(spec)
            root = base
        points = [b for b in root._binds if isinstance(b, HookPoint)]
        if points:
            target = ("slot", points[0], tuple(reversed(chain)))
            dep = self._slot_read(points[0])
        else:
            target, dep = ("node", None, ()), proxy.node
        return self.record("grad", target, (NodeRef(dep), NodeRef(self._loss)), label=f"{proxy._label}.grad",
                           meta=proxy._meta)

    def _slot_read(self, point: HookPoint) -> Node:
        return next(n for n in self.graph.nodes if n.op == "read" and n.target == point)

    def call_module(self, path: str, method: str | None, args: tuple, kwargs: dict) -> Proxy:
        return self.record("call_module", (path, method), args, kwargs)

    # -- saving and concrete values ----------------------------------------------------------
    def save(self, obj: Any) -> None:
        self.check_open()
        self._saved[id(obj)] = obj

    def materialize(self, proxy: Proxy) -> Any:
        """Run the graph recorded so far, as far as ``proxy`` needs, and return its value."""
        self.check_open()
        node = proxy.node
        values = self._run([node], self._row_data() or None)
        value = values[0]
        mx.eval(value)
        self._materialized.append((node, len(self.graph), where_now()))
        return value

    # -- running -----------------------------------------------------------------------------
    def _run(self, nodes: list[Node], data: list | None) -> list:
        model = self.model
        if not data:
            raise ValueError("trace() needs an input, or at least one `with tracer.invoke(...)` block")
        batch = self._batch_of(data)
        self._batch_size.value = model._rows(batch)
        structure = self._structure_for(batch)
        schedule = compile_graph(self.graph, structure, nodes, self._materialized, stop_early=self._stop_early)
        if not nodes:
            return []
        if self.scan:  # validated; nothing is computed
            return []
        runner = Runner(schedule, model._modules_by_path(), self._batch_size.value, self._instrumented)
        env = runner.run(self._forward(runner, batch))
        return [env.get(n.index, NEVER_REACHED) for n in nodes]

    _stop_early = True  # a single forward can end after the last needed hook point

    def _structure_for(self, batch: Any) -> Any:
        key = (id(batch), self._instrumented)
        if self._structure_cache is None or self._structure_cache[0] != key:
            self._structure_cache = (key, self.model._structure(batch, self._instrumented))
        return self._structure_cache[1]

    def use_source(self, path: str) -> None:
        """Run ``path``'s forward instrumented, so its operations are hook points."""
        if path not in self._instrumented:
            self._instrumented = self._instrumented | {path}

    def _forward(self, runner: Runner, batch: Any) -> Callable[[], Any]:
        return self.model._forward(batch)

    def _batch_of(self, data: list) -> Any:
        """The padded batch of ``data`` (several invokes' inputs), built once per distinct list."""
        key = tuple(id(d) for d in data)
        if self._batch_cache is None or self._batch_cache[0] != key:
            self._batch_cache = (key, self.model._batch(data))
        return self._batch_cache[1]

    def _finish(self) -> None:
        if not self._invokes:
            raise ValueError("trace() needs an input, or at least one `with tracer.invoke(...)` block")
        if any(b.arrivals % b.n for b in self._barriers):
            raise ValueError("A barrier was never reached by every block it waits for; check the count it "
                             "was created with")
        self._fill_caches()
        pushes, containers = self._collect_saved()
        proxies: list[Proxy] = []
        for value in [v for _, v in pushes] + containers + [_cache_values(c) for c, _ in self._caches]:
            map_proxies(value, lambda p: proxies.append(p) or p if p._tracer is self else p)
        unique = list({id(p): p for p in proxies}.values())
        nodes = [p.node for p in unique]
        values = self._run(nodes, self._row_data())  # validates even when nothing is saved
        if self.scan:  # shapes and dtypes only, as nnsight's scan gives fake tensors
            values = [skeleton(p._meta) for p in unique]
        reached = [v for v in values if v is not NEVER_REACHED]
        if reached and self._session is None and not self.scan:
            mx.eval(reached)  # in a session, values stay lazy until the session ends
        resolved = {id(p): v for p, v in zip(unique, values)}

        def resolve(value: Any) -> Any:
            return map_proxies(value, lambda p: resolved.get(id(p), p))

        for cache, spec in self._caches:
            for entries in cache.values():
                for entry in entries if isinstance(entries, list) else [entries]:
                    entry.output, entry.inputs = resolve(entry.output), resolve(entry.inputs)
                    if spec["dtype"] is not None:
                        entry.output, entry.inputs = cast(entry.output, spec["dtype"]), cast(entry.inputs, spec["dtype"])
        transform = context.settings.value_transform
        for container in containers:
            _replace_in_place(container, resolve)
            if transform is not None and self._session is None:  # lists/dicts the script made before
                transform(container)  # the trace hold the same values as pushed names (in place)
        updates = {}
        for name, value in pushes:
            if isinstance(value, (list, dict)) and not isinstance(value, Proxy):
                _replace_in_place(value, resolve)
                updates[name] = value
            elif not _contains(resolve(value), NEVER_REACHED):
                updates[name] = resolve(value)
        if self._session is not None:
            self._session.adopt(self, updates, {n for n, v in pushes if id(v) in self._saved})
            return
        if transform is not None:
            updates = {k: transform(v) for k, v in updates.items()}
        self._frame.push(self._locals, updates, self.holds_proxy)
        context.notify_exit(self._frame.info, updates)

    def owns(self, value: Any) -> bool:
        """Whether ``value`` is one of this trace's proxies."""
        return isinstance(value, Proxy) and value._tracer is self

    def holds_proxy(self, value: Any) -> bool:
        return holds(value, self.owns)

    def _fill_caches(self) -> None:
        if not self._caches:
            return
        structure = self._structure_for(self._batch_of(self._row_data()))
        for cache, spec in self._caches:
            for point in sorted(structure.order, key=structure.order.__getitem__):
                if point.kind != "output" or (spec["paths"] is not None and point.path not in spec["paths"]):
                    continue
                entry = CacheEntry()
                if spec["output"]:
                    entry.output = self._slot(point)
                if spec["inputs"]:
                    entry.inputs = self._slot(HookPoint(point.path, "input", point.call))
                key = point.module
                if key in cache:
                    previous = cache[key]
                    cache[key] = (previous if isinstance(previous, list) else [previous]) + [entry]
                else:
                    cache[key] = entry

    def _collect_saved(self) -> tuple[list[tuple[str, Any]], list]:
        """Names to push (saved objects) and pre-existing containers that now hold proxies."""
        pushes, containers, self._locals = self._frame.collect(self.holds_proxy, self._saved,
                                                               hand_all=self._session is not None)
        return pushes, containers


def _strip_root(path: str) -> str:
    return path[len("model."):] if path.startswith("model.") else ("" if path == "model" else path)


def _cache_values(cache: Cache) -> list:
    return [(e.output, e.inputs) for entries in cache.values()
            for e in (entries if isinstance(entries, list) else [entries])]


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
    if isinstance(a, mx.array) and isinstance(b, mx.array) and tuple(a.shape) != tuple(b.shape):
        raise TraceError(f"shape mismatch assigning to {label}: it has shape {tuple(a.shape)}, "
                         f"the new value has shape {tuple(b.shape)}", where_now())


def _replace_in_place(container: Any, resolve: Callable[[Any], Any]) -> None:
    """Resolve proxies in a list/dict; values from steps the run never made are dropped."""
    if isinstance(container, list):
        container[:] = [r for r in (resolve(v) for v in container) if not _contains(r, NEVER_REACHED)]
    elif isinstance(container, dict):
        for k in list(container):
            value = resolve(container[k])
            if _contains(value, NEVER_REACHED):
                del container[k]
            else:
                container[k] = value


def _contains(value: Any, marker: Any) -> bool:
    if value is marker:
        return True
    if isinstance(value, (list, tuple)):
        return any(_contains(v, marker) for v in value)
    return False
