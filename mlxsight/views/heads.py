"""Head scores: a layers x heads grid of one score (previous-token, induction, ...) with the top heads listed."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import figure
from .page import document, floats, to_numpy


def _fields(result: Any) -> tuple[np.ndarray, list[int], str]:
    scores = to_numpy(result.scores)
    layers = getattr(result, "layers", None)
    layers = list(range(scores.shape[0])) if layers is None else [int(x) for x in layers]
    return scores, layers, str(getattr(result, "kind", "score"))


def _top(result: Any, scores: np.ndarray, k: int) -> list[tuple[int, int, float]]:
    if callable(getattr(result, "top", None)):
        return [(int(i), int(h), float(v)) for i, h, v in result.top(k)]
    order = np.argsort(-scores, axis=None, kind="stable")[:k]
    return [(int(i), int(h), float(scores[i, h])) for i, h in zip(*np.unravel_index(order, scores.shape))]


def to_html(result: Any, *, title: str | None = None, top_k: int = 10) -> str:
    scores, layers, kind = _fields(result)
    data = {"scores": floats(scores), "layers": layers, "kind": kind,
            "top": [[layers[i], h, v] for i, h, v in _top(result, scores, top_k)]}
    return document("heads", title or f"{kind} head scores", data, SCRIPT,
                    subtitle=f"{scores.shape[0]} layers x {scores.shape[1]} heads")


def plot(result: Any, *, ax: Any = None, title: str | None = None) -> Any:
    scores, layers, kind = _fields(result)
    fig, ax = figure.axes(ax, figsize=(max(5, 0.45 * scores.shape[1] + 2), max(3, 0.35 * len(layers) + 1.5)))
    lo = float(np.nanmin(scores))
    figure.heatmap(ax, scores, xlabels=[str(h) for h in range(scores.shape[1])], ylabels=layers, colorbar=kind,
                   center=lo < 0, cmap="RdBu" if lo < 0 else "Blues",
                   annotations=np.vectorize(lambda v: f"{v:.2f}")(scores) if scores.size <= 400 else None)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title or f"{kind} head scores")
    return fig


SCRIPT = r"""
function (root, d, M) {
  const S = d.scores, L = S.length, H = S[0].length;
  let lo = Infinity, hi = -Infinity; S.forEach(r => r.forEach(v => { lo = Math.min(lo, v); hi = Math.max(hi, v); }));
  const bound = Math.max(Math.abs(lo), Math.abs(hi)) || 1;
  const info = M.el("div", "mlxs-info", "hover a head for its score");
  const tip = M.tip(root), table = M.el("table", "mlxs-grid");
  const head = M.el("tr"); head.appendChild(M.el("th", null, "layer \\ head"));
  for (let h = 0; h < H; h++) head.appendChild(M.el("th", null, h));
  table.appendChild(head);
  for (let i = 0; i < L; i++) {
    const tr = M.el("tr"); tr.appendChild(M.el("th", null, d.layers[i]));
    for (let h = 0; h < H; h++) {
      const v = S[i][h], c = lo < 0 ? v / bound : v / (hi || 1), td = M.el("td", null, M.fmt(v, 2));
      td.style.background = lo < 0 ? M.div(c) : M.seq(c); td.style.color = M.ink(c);
      td.dataset.layer = d.layers[i]; td.dataset.head = h;
      const text = "layer " + d.layers[i] + ", head " + h + "\n" + d.kind + " " + M.fmt(v, 4);
      td.addEventListener("mouseenter", ev => { info.textContent = text; tip.show(ev, text); td.classList.add("hot"); });
      td.addEventListener("mouseleave", () => { tip.hide(); td.classList.remove("hot"); });
      tr.appendChild(td);
    }
    table.appendChild(tr);
  }
  root.appendChild(table); root.appendChild(info);
  const list = M.el("ol", "mlxs-top");
  d.top.forEach(([l, h, v]) => list.appendChild(M.el("li", null, "L" + l + "H" + h + "  " + M.fmt(v, 4))));
  root.appendChild(M.el("div", "mlxs-sub", "top heads"));
  root.appendChild(list);
}
"""
