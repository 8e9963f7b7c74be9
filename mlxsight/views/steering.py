"""Steering comparison: the same prompt continued at several steering scales; a slider picks the scale."""

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


def to_html(result: Any, *, title: str | None = None) -> str:
    f = _fields(result)
    where = "" if f["layer"] is None else f"layer {f['layer']}, "
    return document("steering", title or "steering", f, SCRIPT, subtitle=f"{where}{len(f['scales'])} scales")


def plot(result: Any, *, ax: Any = None, width: int = 90, title: str | None = None) -> Any:
    """The continuations by scale as text (and the score by scale when the result has scores)."""
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
    ax.text(0, 1, "\n".join(lines), va="top", ha="left", family="monospace", fontsize=8, transform=ax.transAxes)
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
