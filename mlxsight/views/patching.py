"""Activation and attribution patching: a layers x positions (or heads) heatmap labelled with the tokens,
showing the normalised effect (0 = corrupted run, 1 = clean run) or the raw metric, with both on hover."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import figure
from .page import display_token, document, floats, to_numpy


def normalised(result: Any) -> np.ndarray:
    """The result's own normalised view when it has one, else ``(score - corrupted) / (clean - corrupted)``."""
    for name in ("normalized", "normalised"):
        value = getattr(result, name, None)
        if value is not None:
            return to_numpy(value() if callable(value) else value)
    scores = to_numpy(result.scores)
    return (scores - float(result.corrupted)) / ((float(result.clean) - float(result.corrupted)) or 1.0)


def _fields(result: Any) -> dict:
    scores = to_numpy(result.scores)
    norm = normalised(result)
    component = str(getattr(result, "component", "resid"))
    layers = getattr(result, "layers", None)
    layers = list(range(scores.shape[0])) if layers is None else [int(x) for x in layers]
    tokens = getattr(result, "tokens", None)
    tokens = [] if tokens is None else [str(t) for t in tokens]
    positions = getattr(result, "positions", None)
    heads = getattr(result, "heads", None)
    if scores.ndim == 3:  # [layers, positions, heads]: one head at a time on the page
        heads = list(range(scores.shape[2])) if heads is None else [int(h) for h in heads]
    if component == "heads" and scores.ndim == 2:  # each head patched at every position
        heads = list(range(scores.shape[1])) if heads is None else [int(h) for h in heads]
        columns, axis = [f"H{h}" for h in heads], "head"
    else:
        positions = list(range(scores.shape[1])) if positions is None else [int(p) for p in positions]
        columns, axis = [display_token(tokens[p]) if p < len(tokens) else str(p) for p in positions], "position"
    metric = getattr(result, "metric", None) or "metric"
    return {"scores": scores, "norm": norm, "layers": layers, "columns": columns, "axis": axis,
            "heads": heads if scores.ndim == 3 else None, "component": component,
            "metric": metric if isinstance(metric, str) else getattr(metric, "__name__", "metric"),
            "clean": float(result.clean), "corrupted": float(result.corrupted),
            "method": str(getattr(result, "method", "activation"))}


def to_html(result: Any, *, title: str | None = None) -> str:
    f = _fields(result)
    data = {"scores": floats(f["scores"]),
            "norm": floats(f["norm"]),
            "layers": f["layers"], "columns": f["columns"], "axis": f["axis"], "heads": f["heads"],
            "component": f["component"], "metric": f["metric"],
            "clean": f["clean"], "corrupted": f["corrupted"]}
    return document("patching", title or f"{f['method']} patching: {f['component']}", data, SCRIPT,
                    subtitle=f"{f['metric']}: clean {f['clean']:.4g}, corrupted {f['corrupted']:.4g}")


def plot(result: Any, *, ax: Any = None, raw: bool = False, head: int | None = None, title: str | None = None) -> Any:
    """The heatmap of the normalised effect (``raw=True``: the metric itself), diverging around 0.
    Per-position head results show one ``head`` (default: the sum over heads)."""
    f = _fields(result)
    values = f["scores"] if raw else f["norm"]
    if values.ndim == 3:  # [layers, positions, heads]: the head chosen (default: summed over heads)
        values = values.sum(-1) if head is None else values[..., f["heads"].index(head)]
    fig, ax = figure.axes(ax, figsize=(max(5, 0.45 * len(f["columns"]) + 2), max(3, 0.35 * len(f["layers"]) + 1.5)))
    figure.heatmap(ax, values, xlabels=f["columns"], ylabels=f["layers"], cmap="RdBu", center=True,
                   colorbar=f["metric"] if raw else "normalised effect (1 = clean)")
    ax.set_xlabel(f["axis"])
    ax.set_ylabel("layer")
    ax.set_title(title or f"{f['method']} patching: {f['component']}")
    return fig


SCRIPT = r"""
function (root, d, M) {
  const L = d.layers.length, P = d.columns.length;
  let which = "norm", hi = 0;
  const at = (V, i, j) => d.heads ? V[i][j][hi] : V[i][j];
  const ctrl = M.el("div", "mlxs-ctrl"); root.appendChild(ctrl);
  ctrl.appendChild(M.select("show", [["norm", "normalised (1 = clean)"], ["scores", d.metric + " (raw)"]], v => { which = v; paint(); }));
  if (d.heads) ctrl.appendChild(M.select("head", d.heads.map((h, k) => [k, h]), v => { hi = +v; paint(); }));
  const info = M.el("div", "mlxs-info", "hover a cell for its values");  // below the grid, as in the lens
  const tip = M.tip(root), table = M.el("table", "mlxs-grid"), cells = [];
  const head = M.el("tr"); head.appendChild(M.el("th", null, "layer"));
  d.columns.forEach(c => head.appendChild(M.el("th", null, c)));
  table.appendChild(head);
  for (let i = 0; i < L; i++) {
    const tr = M.el("tr"); tr.appendChild(M.el("th", null, d.layers[i])); cells.push([]);
    for (let j = 0; j < P; j++) {
      const td = M.el("td"); td.dataset.layer = d.layers[i]; td.dataset.col = j;
      const text = () => "layer " + d.layers[i] + ", " + (d.axis === "head" ? d.columns[j] : "position " + j + " " + JSON.stringify(d.columns[j])) +
        (d.heads ? ", head " + d.heads[hi] : "") +
        "\n" + d.metric + " " + M.fmt(at(d.scores, i, j), 4) + "\nnormalised " + M.fmt(at(d.norm, i, j), 4);
      td.addEventListener("mouseenter", ev => { const s = text(); info.textContent = s; tip.show(ev, s); td.classList.add("hot"); });
      td.addEventListener("mouseleave", () => { tip.hide(); td.classList.remove("hot"); });
      tr.appendChild(td); cells[i].push(td);
    }
    table.appendChild(tr);
  }
  root.appendChild(table); root.appendChild(info);
  function paint() {
    const V = d[which]; let b = 1e-12;
    for (let i = 0; i < L; i++) for (let j = 0; j < P; j++) b = Math.max(b, Math.abs(at(V, i, j)));
    for (let i = 0; i < L; i++) for (let j = 0; j < P; j++) {
      const v = at(V, i, j), td = cells[i][j]; td.textContent = M.fmt(v, 2);
      td.style.background = M.div(v / b); td.style.color = M.ink(v / b);
    }
  }
  paint();
}
"""
