"""The intervention graph: an IR in the spirit of torch.fx.

A ``Graph`` is an ordered list of ``Node``s, each ``op, target, args, kwargs`` plus the user's source
line. The opcodes are a closed set (``OPCODES``; ``Graph.create`` refuses any other):

- ``read``   target: a ``HookPoint``; the value at that point of the forward (whole batch).
- ``write``  target: a ``HookPoint``; args: (value,); the forward continues with ``value``.
- ``skip``   target: the module's input ``HookPoint``; args: (value,); kwargs: ``rows`` (an invoke's
  row range, or None for all): the module's body does not run and its output is ``value``.
- ``view``   target: a ``ViewSpec``; args: (base,); a torch-style view of ``base``.
- ``put``    target: a ``ViewSpec``; args: (base, value); ``base`` with the view replaced by ``value``.
- ``call_function`` / ``call_method`` / ``call_module``: target a callable, a method name, or a
  ``ModuleCall``; args may contain nodes anywhere (see ``map_nodes``). A hooked module call
  (``envoy(x, hook=True)``) *hosts* the hook points of the calls it makes (``Graph.hosted``).
- ``grad``   target: ``(kind, point, views)``; args: (value, loss): d loss / d value, where ``kind``
  "slot" means the value the forward continues with at ``point`` and ``views`` narrow the result.
  It fires in the backward of ``loss``, when the cotangent reaches the value.
- ``set_grad`` target: as ``grad``; args: (value, loss, new): the cotangent that flows on from the
  value (to earlier values and to later ``grad`` reads of it) becomes ``new`` (``x.grad = new``).

``print(graph)`` shows it as code, one node a line, with the source line of each.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, NamedTuple

from .errors import ExpiredProxyError, Where
from .tree import find_all, map_matching


OPCODES = frozenset({"read", "write", "skip", "view", "put", "call_function", "call_method", "call_module",
                     "grad", "set_grad"})
POINT_OPS = frozenset({"read", "write", "skip"})  # the opcodes whose target is a hook point


class HookPoint(NamedTuple):
    """A place in the forward: a module's ``input`` or ``output`` on its n-th call.

    A named tuple: hook points are hashed and compared constantly while compiling and running."""

    path: str  # module path relative to the root ("" is the root itself)
    kind: str  # "input", "output", or "result" (a generation's token ids)
    call: int = 0

    @property
    def module(self) -> str:
        """The module's nnsight-style path: ``model.model.layers.0``."""
        return ".".join(p for p in ("model", self.path) if p)

    def label(self, root: str = "model") -> str:
        kind = "inputs" if self.kind == "input" else self.kind
        if root and self.path:
            return f"{root}.{self.path}.{kind}"
        return f"{root or self.path}.{kind}" if root or self.path else f".{kind}"

    def __str__(self) -> str:
        return self.label() + (f".i{self.call}" if self.call else "")


class ModuleCall(NamedTuple):
    """A ``call_module`` target: ``model.<path>(...)`` (``.<method>(...)``). ``hook``: the call is
    observed (nnsight's ``hook=True``), so the hook points of the modules it runs are served."""

    path: str
    method: str | None = None
    hook: bool = False


@dataclass(eq=False)
class Node:
    op: str
    target: Any
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    where: Where | None = None
    index: int = -1
    invoke: int | None = None
    deps: list["Node"] = field(default_factory=list)  # the nodes among args/kwargs, found once

    @property
    def name(self) -> str:
        return f"%{self.index}"

    def inputs(self) -> list["Node"]:
        return self.deps

    def __repr__(self) -> str:
        return f"Node({self.name}: {format_node(self)})"


def map_nodes(value: Any, fn: Callable[[Node], Any]) -> Any:
    """Rebuild ``value`` with every Node inside it (at any depth) replaced by ``fn(node)``."""
    return map_matching(value, Node, fn)


class Graph:
    """An ordered list of nodes, plus the nodes whose values leave the trace."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.outputs: dict[int, str] = {}  # node index -> a label for printing ("h", "saved")
        # What compiling depends on, one entry a node: opcode, hook point, dependencies. Two graphs
        # with equal shapes compile to the same schedule (constants and callables do not matter).
        self.shape: list[tuple] = []
        # The hook points that hooked module calls make (``envoy(x, hook=True)``): each point, the
        # call node that makes it and its skeleton. The forward never reaches them by itself.
        self.hosted: dict[HookPoint, tuple[Node, Any]] = {}
        # (start, end, step): nodes[start:end] were recorded as the body of an open ``iter[:]`` loop
        # at its last step, ``step`` (an edit replays them at each later step of a generation)
        self.open_loops: list[tuple[int, int, int]] = []

    def create(self, op: str, target: Any, args: tuple = (), kwargs: dict | None = None,
               where: Where | None = None, invoke: int | None = None) -> Node:
        if op not in OPCODES:
            raise ValueError(f"unknown opcode {op!r}: a graph's opcodes are {sorted(OPCODES)}")
        kwargs = kwargs or {}
        deps = find_all(args, Node) if args else []
        if kwargs:
            find_all(tuple(kwargs.values()), Node, deps)
        nodes = self.nodes
        for dep in deps:  # a node of another graph would silently stand for whatever has its index here
            if dep.index >= len(nodes) or nodes[dep.index] is not dep:
                raise ExpiredProxyError("a value of another trace is used here: a value lives only in the trace "
                                        "that made it (save it there; saved values leave as plain arrays)", where)
        node = Node(op, target, args, kwargs, where, len(nodes), invoke, deps)
        nodes.append(node)
        point = target if op in POINT_OPS else (target[:2] if op in ("grad", "set_grad") else None)
        self.shape.append((op, point, tuple([d.index for d in deps]) if deps else ()))
        return node

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def __str__(self) -> str:
        rows = []
        for node in self.nodes:
            text = format_node(node)
            text = text if node.op in ("write", "skip", "set_grad") else f"{node.name} = {text}"
            if node.index in self.outputs:
                text += f"  -> {self.outputs[node.index]}"
            loc = f"{os.path.basename(node.where.file)}:{node.where.line}" if node.where else ""
            rows.append((text, loc))
        width = max((len(t) for t, _ in rows), default=0)
        lines = [f"{t:<{width}}  # {loc}" if loc else t for t, loc in rows]
        return "\n".join(lines) if lines else "<empty graph>"

    __repr__ = __str__

    def _repr_html_(self) -> str:
        from .notebook import graph_html

        return graph_html(self, format_node)


def format_arg(value: Any) -> str:
    if isinstance(value, Node):
        return value.name
    if isinstance(value, (list, tuple)):
        inner = ", ".join(format_arg(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner}{',' if len(value) == 1 else ''})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {format_arg(v)}" for k, v in value.items()) + "}"
    shape = getattr(value, "shape", None)
    if shape is not None and not isinstance(value, (int, float)):
        return f"array{tuple(shape)}"
    return repr(value)


def _call_args(node: Node, skip: int = 0) -> str:
    parts = [format_arg(a) for a in node.args[skip:]]
    parts += [f"{k}={format_arg(v)}" for k, v in node.kwargs.items()]
    return ", ".join(parts)


def format_node(node: Node) -> str:
    op, t = node.op, node.target
    if op == "read":
        return t.label()
    if op == "write":
        return f"{t.label()} = {format_arg(node.args[0])}"
    if op == "skip":
        rows = node.kwargs.get("rows")
        return f"{t.module}.skip({format_arg(node.args[0])}{f', rows={rows}' if rows else ''})"
    if op in ("grad", "set_grad"):
        kind, point, chain = t
        wrt = point.label() if kind == "slot" else format_arg(node.args[0])
        text = f"grad({format_arg(node.args[1])}, wrt={wrt}){''.join(str(c) for c in chain)}"
        return text if op == "grad" else f"{text} = {format_arg(node.args[2])}"
    if op == "view":
        return f"{format_arg(node.args[0])}{t}"
    if op == "put":
        return f"put({format_arg(node.args[0])}{t}, {format_arg(node.args[1])})"
    if op == "call_method":
        return f"{format_arg(node.args[0])}.{t}({_call_args(node, 1)})"
    if op == "call_module":
        name = ".".join(p for p in ("model", t.path) if p)
        hook = ", hook=True" if t.hook else ""
        return f"{name}{'.' + t.method if t.method else ''}({_call_args(node)}{hook})"
    name = getattr(t, "__qualname__", None) or getattr(t, "__name__", None) or repr(t)
    module = getattr(t, "__module__", "") or ""
    if module.split(".")[0] == "mlx":
        name = "mx." + name
    return f"{name}({_call_args(node)})"

