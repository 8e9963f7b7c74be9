"""Notebook display (``_repr_html_``) for the core's objects: the envoy tree, a recorded graph with the
user's source lines, and a finished trace's saved values (shapes and dtypes).

Plain, escaped HTML with no script: it renders in Jupyter (trusted or not) and anywhere HTML goes.
The richer, interactive pictures of analysis results live above the core, in ``mlxsight.views``.
"""

from __future__ import annotations

import html
import os
from typing import Any

_STYLE = ("<style>.mlxs-nb{font:12px/1.4 ui-monospace,Menlo,Consolas,monospace;border-collapse:collapse}"
          ".mlxs-nb td,.mlxs-nb th{border:1px solid #ddd;padding:1px 6px;text-align:left;vertical-align:top}"
          ".mlxs-nb th{background:#f6f6f6}.mlxs-nb .src{color:#666}</style>")


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def envoy_html(envoy: Any) -> str:
    """The module tree as nnsight prints it (identical layers collapsed), in a collapsible block."""
    name = type(envoy.mlx_module).__name__
    return (f"<details open><summary><b>{_esc(name)}</b> <code>{_esc(envoy.path or 'model')}</code></summary>"
            f"<pre class='mlxs-nb'>{_esc(repr(envoy))}</pre></details>")


def graph_html(graph: Any, format_node: Any) -> str:
    """One row per node: its name, the operation as code (``format_node``), what leaves the trace, and
    the user's line."""
    rows = []
    for node in graph.nodes:
        code = format_node(node)
        where, source = "", ""
        if node.where is not None:
            where = f"{os.path.basename(node.where.file)}:{node.where.line}"
            source = node.where.code()
        out = graph.outputs.get(node.index, "")
        rows.append(f"<tr><td>{_esc(node.name)}</td><td>{_esc(node.op)}</td><td>{_esc(code)}</td><td>{_esc(out)}</td>"
                    f"<td class='src'>{_esc(where)}</td><td class='src'>{_esc(source)}</td></tr>")
    if not rows:
        return "<i>empty graph</i>"
    return (f"{_STYLE}<table class='mlxs-nb'><tr><th>node</th><th>op</th><th>operation</th><th>out</th>"
            f"<th>line</th><th>source</th></tr>{''.join(rows)}</table>")


def values_html(values: dict[str, Any]) -> str:
    """Saved names with their type, shape and dtype."""
    rows = []
    for name, value in values.items():
        shape = getattr(value, "shape", None)
        dtype = getattr(value, "dtype", None)
        kind = type(value).__name__
        extra = "" if shape is not None else _short(value)
        shown = "" if shape is None else list(shape)
        rows.append(f"<tr><td>{_esc(name)}</td><td>{_esc(kind)}</td><td>{_esc(shown)}</td>"
                    f"<td>{_esc('' if dtype is None else dtype)}</td><td>{_esc(extra)}</td></tr>")
    if not rows:
        return "<i>nothing saved</i>"
    return (f"{_STYLE}<table class='mlxs-nb'><tr><th>saved</th><th>type</th><th>shape</th><th>dtype</th><th></th></tr>"
            f"{''.join(rows)}</table>")


def tracer_html(tracer: Any, values: dict[str, Any] | None) -> str:
    state = "open" if tracer._open else ("finished" if values is not None else "not run")
    parts = [f"<div><b>{_esc(type(tracer).__name__)}</b> ({state}, {len(tracer.graph)} nodes)</div>"]
    if values is not None:
        parts.append(values_html(values))
    parts.append(f"<details><summary>graph</summary>{tracer.graph._repr_html_()}</details>")
    return "".join(parts)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"
