"""An SAE feature's top-activating contexts over a corpus: pick a feature to see its strongest examples,
each window's tokens shaded by the feature's activation, the maximal token outlined."""

from __future__ import annotations

import textwrap
from typing import Any

import numpy as np

from . import figure
from .page import display_token, document, floats, to_numpy


def _fields(result: Any) -> dict:
    ids = [int(i) for i in to_numpy(result.feature_ids, np.int64)]
    values = to_numpy(result.values)
    offsets = None if result.window_offsets is None else to_numpy(result.window_offsets, np.int64)
    features = []
    for j in range(len(ids)):
        examples = []
        for r in range(values.shape[1]):
            if not np.isfinite(values[j, r]):
                break  # fewer than k activations: the rest are -inf
            window = result.windows[j][r] if j < len(result.windows) else []
            acts = result.window_acts[j][r] if j < len(result.window_acts) else []
            examples.append({"value": float(values[j, r]), "text": int(result.text_ids[j, r]),
                             "pos": int(result.positions[j, r]), "tokens": [display_token(t) for t in window],
                             "acts": floats(acts), "at": -1 if offsets is None else int(offsets[j, r])})
        features.append({"id": ids[j], "examples": examples})
    return {"features": features}


def to_html(result: Any, *, title: str | None = None) -> str:
    data = _fields(result)
    n, k = len(data["features"]), max((len(f["examples"]) for f in data["features"]), default=0)
    return document("contexts", title or "SAE feature top contexts", data, SCRIPT,
                    subtitle=f"{n} features, up to {k} contexts each")


def plot(result: Any, *, ax: Any = None, features: int = 6, examples: int = 4, width: int = 100,
         title: str | None = None) -> Any:
    """The top contexts of the first ``features`` features as text, the maximal token in [brackets]."""
    data, lines = _fields(result), []
    for feature in data["features"][:features]:
        lines.append(f"feature {feature['id']}:")
        for ex in feature["examples"][:examples]:
            toks = [f"[{t}]" if i == ex["at"] else t for i, t in enumerate(ex["tokens"])]
            lines.append(textwrap.shorten(f"  {ex['value']:7.3f}  {''.join(toks)}", width, placeholder="\u2026"))
        lines.append("")
    fig, ax = figure.axes(ax, figsize=(10, 0.2 * len(lines) + 0.8))
    ax.axis("off")
    ax.text(0, 1, "\n".join(lines), va="top", ha="left", family="monospace", fontsize=8, transform=ax.transAxes,
            parse_math=False)
    ax.set_title(title or "SAE feature top contexts", loc="left", fontsize=10)
    return fig


SCRIPT = r"""
function (root, d, M) {
  let j = 0;
  const ctrl = M.el("div", "mlxs-ctrl"); root.appendChild(ctrl);
  ctrl.appendChild(M.select("feature", d.features.map((f, i) =>
    [i, "#" + f.id + (f.examples.length ? " (max " + M.fmt(f.examples[0].value, 2) + ")" : " (never active)")]),
    v => { j = +v; show(); }));
  const list = M.el("div"); root.appendChild(list);
  const info = M.el("div", "mlxs-info", "hover a token for its activation"); root.appendChild(info);
  function show() {
    list.textContent = "";
    const f = d.features[j], top = f.examples.length ? f.examples[0].value : 1;
    f.examples.forEach((ex, r) => {
      const row = M.el("div", "mlxs-strip"); row.dataset.rank = r;
      const head = M.el("span", "mlxs-sub", M.fmt(ex.value, 3) + "  text " + ex.text + " @" + ex.pos + "  ");
      head.style.display = "inline-block"; head.style.minWidth = "14em"; row.appendChild(head);
      ex.tokens.forEach((t, i) => {
        const e = M.el("span", "mlxs-tok", t), v = ex.acts[i] || 0, a = Math.max(0, v / (top || 1));
        e.dataset.v = v.toFixed(3); e.title = v.toFixed(3);
        e.style.background = "rgba(240,120,20," + a.toFixed(3) + ")"; e.style.color = a > 0.6 ? "#fff" : "#222";
        if (i === ex.at) e.classList.add("sel");
        e.addEventListener("mouseenter", () => { info.textContent = "#" + f.id + " on " + JSON.stringify(t) + ": " + M.fmt(v, 4); });
        row.appendChild(e);
      });
      list.appendChild(row);
    });
    if (!f.examples.length) list.appendChild(M.el("div", "mlxs-sub", "this feature never fired on the corpus"));
  }
  show();
}
"""
