"""``.source``: the operations inside a module's forward, readable and writable like modules.

A module's ``__call__`` source is parsed and every call ``f(...)`` becomes an operation named
``{dotted name}_{n}`` (``self.gate_proj(x)`` -> ``self_gate_proj_0``), and every assignment
``x = ...`` one named ``x_{n}``; ``n`` counts per name in execution order (inner calls first),
following nnsight's naming. When a trace touches an operation, that module runs an instrumented
copy of its forward whose operations are hook points ``<module>.source.<op>``; every other module
runs untouched. An operation that calls a Python function can be drilled into, as in nnsight
(``<module>.source.<op>.source.<inner op>``): inside a trace, the function the forward actually
calls there runs instrumented in turn.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
import types
from dataclasses import dataclass, field
from typing import Any, Callable

import mlx.nn as nn

from . import hooks

OP = "__mlxsight_op__"
BIND = "__mlxsight_bind__"
SEP = ".source."


class SourceNotAvailable(AttributeError):
    """The module's forward has no Python source to instrument."""


@dataclass
class Instrumented:
    call: Callable  # the instrumented ``__call__``
    ops: list[str] = field(default_factory=list)
    lines: dict[str, int] = field(default_factory=dict)  # op -> line in the file
    source: str = ""
    first_line: int = 1


class _Instrument(ast.NodeTransformer):
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.ops: list[str] = []
        self.lines: dict[str, int] = {}

    @staticmethod
    def dotted(expr: ast.expr) -> tuple[list[str], bool]:
        parts = []
        while True:
            if isinstance(expr, ast.Attribute):
                parts.append(expr.attr)
                expr = expr.value
            elif isinstance(expr, ast.Subscript):
                expr = expr.value
            elif isinstance(expr, ast.Name):
                parts.append(expr.id)
                return parts[::-1], True
            else:
                return parts[::-1], False

    def wrap(self, name: str, fn: ast.expr, args: list, keywords: list, node: ast.AST) -> ast.Call:
        n = self.counts.get(name, 0)
        self.counts[name] = n + 1
        label = f"{name}_{n}"
        self.ops.append(label)
        self.lines[label] = node.lineno
        return ast.copy_location(ast.Call(func=ast.Name(id=OP, ctx=ast.Load()),
                                          args=[ast.Constant(label), fn, *args], keywords=keywords), node)

    def visit_Call(self, node: ast.Call) -> ast.AST:
        if isinstance(node.func, ast.Name) and node.func.id == "super" and not (node.args or node.keywords):
            return node  # zero-argument super() needs the caller's frame: left as it is
        self.generic_visit(node)  # inner calls first: they run first
        parts, _ = self.dotted(node.func)
        return self.wrap("_".join(parts) or "call", node.func, node.args, node.keywords, node)

    def bound(self, target: ast.expr, value: ast.expr, node: ast.AST) -> ast.expr:
        if isinstance(target, (ast.Tuple, ast.List)) and isinstance(value, (ast.Tuple, ast.List)):
            if len(target.elts) == len(value.elts) and not any(
                    isinstance(e, ast.Starred) for e in [*target.elts, *value.elts]):
                value.elts = [self.bound(t, v, node) for t, v in zip(target.elts, value.elts)]
            return value
        parts, rooted = self.dotted(target)
        if not rooted or isinstance(target, (ast.Tuple, ast.List)):
            return value
        return self.wrap("_".join(parts), ast.Name(id=BIND, ctx=ast.Load()), [value], [], node)

    def visit_Assign(self, node: ast.Assign) -> ast.AST:
        node.value = self.visit(node.value)
        node.targets = [self.visit(t) for t in node.targets]
        if len(node.targets) == 1:
            node.value = self.bound(node.targets[0], node.value, node)
        return node

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST:
        if node.value is not None:
            node.value = self.bound(node.target, self.visit(node.value), node)
        return node


_CACHE: dict[Any, Instrumented] = {}


def instrument(cls: type) -> Instrumented:
    """The instrumented ``__call__`` of a module class (cached per function)."""
    func = cls.__call__
    if getattr(func, "__code__", None) is None:
        raise SourceNotAvailable(f"{cls.__name__}.__call__ has no Python source")
    return instrument_function(func)


def callee(fn: Any) -> Any:
    """What a drill into an operation that calls ``fn`` reaches: the Python function (or bound
    method) itself; otherwise a description of why there is none (a submodule, a builtin)."""
    if isinstance(fn, types.MethodType) and isinstance(fn.__func__, types.FunctionType):
        return fn
    if isinstance(fn, types.FunctionType):
        return fn
    if isinstance(fn, nn.Module):
        return "a submodule"
    return f"a {type(fn).__name__} (no Python source)"


def instrument_callee(target: Any, label: str) -> Instrumented:
    """The instrumented copy of what operation ``label`` calls, ``target`` as ``callee`` gives it: a
    bound method keeps its ``self``; a description raises ``SourceNotAvailable`` with it."""
    if target == "a submodule":
        raise SourceNotAvailable(f"'{label}' calls a submodule; call `.source` on that submodule directly "
                                 "instead of drilling into the call")
    if isinstance(target, str):
        raise SourceNotAvailable(f"'{label}' calls {target}: there is no source to drill into")
    if isinstance(target, types.MethodType):
        inner = instrument_function(target.__func__)
        return Instrumented(types.MethodType(inner.call, target.__self__), inner.ops, inner.lines,
                            inner.source, inner.first_line)
    return instrument_function(target)


def instrument_function(func: Callable) -> Instrumented:
    """The instrumented copy of a Python function (cached per code object)."""
    code = getattr(func, "__code__", None)
    if code is None:
        raise SourceNotAvailable(f"{getattr(func, '__qualname__', func)!r} has no Python source")
    if code in _CACHE:
        return _CACHE[code]
    try:
        lines, start = inspect.getsourcelines(code)
    except (OSError, TypeError) as e:
        raise SourceNotAvailable(f"the source of {func.__qualname__} is not available") from e
    text = textwrap.dedent("".join(lines))
    tree = ast.parse(text)
    definition = tree.body[0]
    definition.decorator_list = []
    rewriter = _Instrument()
    rewriter.visit(tree)
    # Compiled inside a shell whose parameters are the function's free variables, so closures
    # (and ``__class__`` for super()) are rebound to the original cells' values.
    shell = ast.FunctionDef(
        name="__mlxsight_shell__",
        args=ast.arguments(posonlyargs=[], args=[ast.arg(arg=v) for v in code.co_freevars], kwonlyargs=[],
                           kw_defaults=[], defaults=[]),
        body=[definition, ast.Return(value=ast.Name(id=definition.name, ctx=ast.Load()))], decorator_list=[])
    tree.body[0] = ast.copy_location(shell, definition)
    ast.increment_lineno(tree, start - 1)
    ast.fix_missing_locations(tree)
    namespace = dict(func.__globals__)
    namespace[OP], namespace[BIND] = _op, _bind
    exec(compile(tree, code.co_filename, "exec"), namespace)
    cells = [c.cell_contents for c in (func.__closure__ or ())]
    new = namespace["__mlxsight_shell__"](*cells)
    lines_abs = {op: line + start - 1 for op, line in rewriter.lines.items()}
    result = Instrumented(new, rewriter.ops, lines_abs, text, start)
    _CACHE[code] = result
    return result


def _bind(value: Any) -> Any:
    return value


def _op(name: str, fn: Callable, *args: Any, **kwargs: Any) -> Any:
    observer = hooks.active()
    stack = getattr(observer, "source_stack", None)
    if not stack or observer.suspended:
        return fn(*args, **kwargs)
    return observer.on_op(f"{stack[-1]}{SEP}{name}", fn, args, kwargs)


def module_of(path: str) -> str:
    """The module path of a hook-point path (``a.b.source.op`` -> ``a.b``)."""
    return path.split(SEP, 1)[0]


def drilled(path: str) -> list[str]:
    """What runs instrumented for a hook point of ``path``: its module, and every operation drilled
    into on the way (``m.source.f.source.op`` -> ``m``, ``m.source.f``)."""
    parts = path.split(SEP)
    return [SEP.join(parts[:i]) for i in range(1, len(parts))]


def listing(instrumented: Instrumented) -> str:
    """The forward's source with each line's operations in a gutter, as nnsight prints it."""
    by_line: dict[int, list[str]] = {}
    for op, line in instrumented.lines.items():
        by_line.setdefault(line, []).append(op)
    width = max((len(", ".join(v)) for v in by_line.values()), default=0)
    rows = []
    for i, text in enumerate(instrumented.source.splitlines()):
        ops = ", ".join(by_line.get(instrumented.first_line + i, []))
        rows.append(f"{ops:>{width}} | {text}")
    return "\n".join(rows)
