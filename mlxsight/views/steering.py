"""Steering: the same prompt continued at several scales (a slider picks the scale), and a scale
search's evaluations (metric against scale, with the target)."""

from __future__ import annotations

import textwrap
from typing import Any

import numpy as np

from . import figure
from .page import document, to_numpy


def _fields(result: Any) -> dict:
    scales = [float(s) for s in to_numpy(result.scales, np.float64)]
    texts = [str(t) for t in result.texts]
    if len(texts) != len(scales):
        raise ValueError(f"{len(scales)} scales but {len(texts)} texts")
    scores = getattr(result, "scores", None)
    return {"prompt": str(getattr(result, "prompt", "")), "scales": scales, "texts": texts,
            "scores": None if scores is None else [float(s) for s in to_numpy(scores, np.float64)],
            "metric": str(getattr(result, "metric", "score") or "score"), "layer": getattr(result, "layer", None)}


def _is_search(result: Any) -> bool:
    return any(c.__name__ == "ScaleSearch" for c in type(result).__mro__)


def _search(result: Any) -> dict:
    return {"evaluations": [[float(s), float(v)] for s, v in result.evaluations], "target": float(result.target),
            "scale": None if result.scale is None else float(result.scale), "metric": str(result.metric or "metric"),
            "increasing": bool(result.increasing)}


def to_html(result: Any, *, title: str | None = None) -> str:
    if _is_search(result):
        d = _search(result)
        found = "no scale reaches the target" if d["scale"] is None else f"scale {d['scale']:g}"
        return document("scale-search", title or "scale search", d, SEARCH_SCRIPT,
                        subtitle=f"{d['metric']} to {d['target']:g}: {found}, {len(d['evaluations'])} evaluations")
    f = _fields(result)
    where = "" if f["layer"] is None else f"layer {f['layer']}, "
    return document("steering", title or "steering", f, SCRIPT, subtitle=f"{where}{len(f['scales'])} scales")


def plot(result: Any, *, ax: Any = None, width: int = 90, title: str | None = None) -> Any:
    """The continuations by scale as text (and the score by scale when the result has scores); for a
    scale search, the metric of every evaluated scale with the target and the scale found."""
    if _is_search(result):
        d = _search(result)
        fig, ax = figure.axes(ax, figsize=(7, 4))
        points = sorted(d["evaluations"])
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label=d["metric"])
        ax.axhline(d["target"], color="grey", linestyle="--", label="target")
        if d["scale"] is not None:
            ax.axvline(d["scale"], color="C3", linestyle=":", label=f"scale {d['scale']:g}")
        ax.set_xlabel("steering scale")
        ax.set_ylabel(d["metric"])
        ax.legend()
        ax.set_title(title or "scale search")
        return fig
    f = _fields(result)
    lines = []
    for s, t in zip(f["scales"], f["texts"]):
        body = textwrap.wrap(t.replace("\n", " "), width) or [""]
        lines += [f"scale {s:g}: {body[0]}"] + ["    " + b for b in body[1:]] + [""]
    if f["scores"] is not None:
        fig, ax = figure.axes(ax, figsize=(8, 4))
        ax.plot(f["scales"], f["scores"], "o-")
        ax.set_xlabel("steering scale")
        ax.set_ylabel(f["metric"])
        ax.set_title(title or "steering")
        return fig
    fig, ax = figure.axes(ax, figsize=(9, 0.22 * len(lines) + 0.8))
    ax.axis("off")
    ax.text(0, 1, "\n".join(lines), va="top", ha="left", family="monospace", fontsize=8, transform=ax.transAxes,
            parse_math=False)
    ax.set_title(title or f"steering: {f['prompt']!r}", loc="left", fontsize=10)
    return fig


SCRIPT = r"""
function (root, d, M) {
  const n = d.scales.length;
  const ctrl = M.el("div", "mlxs-ctrl"); root.appendChild(ctrl);
  const label = M.el("label", null, "scale "), slider = M.el("input"), shown = M.el("b");
  slider.type = "range"; slider.min = 0; slider.max = n - 1; slider.step = 1;
  const zero = d.scales.findIndex(s => s === 0); slider.value = zero >= 0 ? zero : 0;
  label.appendChild(slider); label.appendChild(shown); ctrl.appendChild(label);
  const text = M.el("div", "mlxs-text"), prompt = M.el("span", "mlxs-prompt", d.prompt), cont = M.el("span");
  text.appendChild(prompt); text.appendChild(cont); root.appendChild(text);
  const info = M.el("div", "mlxs-info"); root.appendChild(info);
  function show() {
    const i = +slider.value; shown.textContent = " " + d.scales[i];
    const t = d.texts[i]; cont.textContent = t.startsWith(d.prompt) ? t.slice(d.prompt.length) : t;
    prompt.style.display = t.startsWith(d.prompt) ? "" : "none";
    info.textContent = d.scores ? d.metric + " " + M.fmt(d.scores[i], 4) : "";
  }
  slider.addEventListener("input", show);
  show();
  const all = M.el("table", "mlxs-grid");
  d.scales.forEach((s, i) => {
    const tr = M.el("tr"); tr.appendChild(M.el("th", null, s));
    const td = M.el("td", null, d.texts[i]); td.style.textAlign = "left"; td.style.whiteSpace = "pre-wrap"; td.style.maxWidth = "none";
    tr.appendChild(td); all.appendChild(tr);
  });
  root.appendChild(M.el("div", "mlxs-sub", "all scales")); root.appendChild(all);
}
"""

SEARCH_SCRIPT = r"""
function (root, d, M) {
  const pts = d.evaluations.slice().sort((a, b) => a[0] - b[0]);
  const W = 480, H = 220, P = 36, NS = "http://www.w3.org/2000/svg";
  const xs = pts.map(p => p[0]), ys = pts.map(p => p[1]).concat([d.target]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs) || 1, y0 = Math.min(...ys), y1 = Math.max(...ys);
  const X = x => P + (x - x0) / ((x1 - x0) || 1) * (W - 2 * P), Y = y => H - P - (y - y0) / ((y1 - y0) || 1) * (H - 2 * P);
  const svg = document.createElementNS(NS, "svg"); svg.setAttribute("width", W); svg.setAttribute("height", H);
  const add = (tag, attrs, text) => { const e = document.createElementNS(NS, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]); if (text !== undefined) e.textContent = text; svg.appendChild(e); return e; };
  add("line", {x1: P, x2: W - P, y1: Y(d.target), y2: Y(d.target), stroke: "#999", "stroke-dasharray": "4 3"});
  add("text", {x: W - P, y: Y(d.target) - 4, "text-anchor": "end", "font-size": 11, fill: "#666"}, "target " + d.target);
  add("polyline", {points: pts.map(p => X(p[0]) + "," + Y(p[1])).join(" "), fill: "none", stroke: "#3b6fd8"});
  pts.forEach(p => { const c = add("circle", {cx: X(p[0]), cy: Y(p[1]), r: 4, fill: p[0] === d.scale ? "#d33" : "#3b6fd8"});
    c.appendChild(document.createElementNS(NS, "title")).textContent = "scale " + p[0] + ": " + M.fmt(p[1], 4); });
  add("text", {x: W / 2, y: H - 6, "text-anchor": "middle", "font-size": 11}, "scale");
  add("text", {x: 4, y: 14, "font-size": 11}, d.metric);
  root.appendChild(svg);
  const table = M.el("table", "mlxs-grid"), head = M.el("tr");
  ["step", "scale", d.metric].forEach(h => head.appendChild(M.el("th", null, h))); table.appendChild(head);
  d.evaluations.forEach(([s, v], i) => { const tr = M.el("tr");
    [i + 1, s, M.fmt(v, 4)].forEach(x => tr.appendChild(M.el("td", null, x)));
    if (s === d.scale) tr.style.fontWeight = "bold"; table.appendChild(tr); });
  root.appendChild(table);
}
"""
