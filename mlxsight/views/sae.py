"""SAE features over text: pick a feature to highlight the tokens where it fires; hover a token to list
the features most active there. Feature attributions (signed: gradient x activation) show the same
way, for the features with the largest total attribution, plus the SAE's error term."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import figure
from .page import display_token, document, floats, to_numpy


def _is_attribution(result: Any) -> bool:
    return any(c.__name__ == "FeatureAttribution" for c in type(result).__mro__)


def _fields(result: Any, top: int = 20) -> dict:
    if _is_attribution(result):
        ids = [i for i, _ in result.top(top)]
        scores = to_numpy(result.scores)[:, ids]
        acts = np.concatenate([scores, to_numpy(result.error_scores).reshape(-1, 1)], axis=1)
        return {"acts": acts, "ids": ids + [-1], "tokens": [str(t) for t in result.tokens],
                "labels": [""] * len(ids) + ["SAE error"], "signed": True, "what": "attribution",
                "metric": float(result.metric)}
    acts = to_numpy(result.acts)
    if acts.ndim == 3 and acts.shape[0] == 1:
        acts = acts[0]
    if acts.ndim != 2:
        raise ValueError(f"SAE activations must be [T, n_features], got {list(acts.shape)}")
    ids = getattr(result, "feature_ids", None)
    ids = list(range(acts.shape[1])) if ids is None else [int(i) for i in to_numpy(ids, np.int64)]
    return {"acts": acts, "ids": ids, "tokens": [str(t) for t in result.tokens],
            "labels": [str(x) for x in (getattr(result, "labels", None) or [])], "signed": False, "what": "activation"}


def to_html(result: Any, *, title: str | None = None) -> str:
    f = _fields(result)
    peak = np.abs(f["acts"]).max(axis=0) if f["signed"] else f["acts"].max(axis=0)
    order = np.argsort(-peak, kind="stable")
    data = {"acts": floats(f["acts"]), "ids": f["ids"], "labels": f["labels"], "signed": f["signed"],
            "tokens": [display_token(t) for t in f["tokens"]], "order": order.tolist()}
    T, F = f["acts"].shape
    if f["signed"]:
        return document("sae", title or "SAE feature attribution", data, SCRIPT,
                        subtitle=f"top {F - 1} features and the error term over {T} tokens; metric {f['metric']:.4g}")
    return document("sae", title or "SAE features", data, SCRIPT, subtitle=f"{F} features over {T} tokens")


def plot(result: Any, *, ax: Any = None, top: int = 20, title: str | None = None) -> Any:
    """Tokens x the ``top`` features by maximum activation."""
    f = _fields(result, top)
    peak = np.abs(f["acts"]).max(axis=0) if f["signed"] else f["acts"].max(axis=0)
    order = np.argsort(-peak, kind="stable")[:top]
    fig, ax = figure.axes(ax, figsize=(max(6, 0.35 * len(f["tokens"]) + 2), max(3, 0.3 * len(order) + 1.5)))
    names = [f["labels"][i] if i < len(f["labels"]) and f["labels"][i] else f["ids"][i] for i in order]
    if f["signed"]:
        figure.heatmap(ax, f["acts"][:, order].T, xlabels=f["tokens"], ylabels=names, colorbar="attribution",
                       cmap="RdBu", center=True)
    else:
        figure.heatmap(ax, f["acts"][:, order].T, xlabels=f["tokens"], ylabels=names, colorbar="activation",
                       cmap="Oranges", vmin=0)
    ax.set_xlabel("token")
    ax.set_ylabel("feature")
    ax.set_title(title or ("SAE feature attribution" if f["signed"] else "SAE features"))
    return fig


SCRIPT = r"""
function (root, d, M) {
  const T = d.tokens.length, F = d.ids.length;
  const col = k => d.acts.map(r => r[k]);
  const name = k => d.ids[k] < 0 ? d.labels[k] : "#" + d.ids[k] + (d.labels[k] ? " " + d.labels[k] : "");
  const max = k => Math.max(...col(k).map(v => d.signed ? Math.abs(v) : v));
  let feat = d.order[0];
  const ctrl = M.el("div", "mlxs-ctrl"); root.appendChild(ctrl);
  const sel = M.select("feature", d.order.map(k => [k, name(k) + " (max " + M.fmt(max(k), 2) + ")"]), v => { feat = +v; paint(); });
  ctrl.appendChild(sel);
  const text = M.el("div", "mlxs-text"), spans = [];
  d.tokens.forEach((t, i) => {
    const e = M.el("span", "mlxs-tok", t); e.dataset.pos = i; spans.push(e); text.appendChild(e);
    e.addEventListener("mouseenter", () => {
      const top = d.acts[i].map((v, k) => [v, k]).filter(x => d.signed ? x[0] !== 0 : x[0] > 0)
        .sort((a, b) => Math.abs(b[0]) - Math.abs(a[0])).slice(0, 8);
      info.textContent = "token " + i + " " + JSON.stringify(t) + "\n" +
        (top.length ? top.map(([v, k]) => name(k) + " " + M.fmt(v, 3)).join("\n") : "no active feature");
    });
  });
  root.appendChild(text);
  const info = M.el("div", "mlxs-info"); root.appendChild(info);
  function paint() {
    const m = max(feat) || 1;
    spans.forEach((e, i) => {
      const v = d.acts[i][feat]; e.dataset.v = v.toFixed(3); e.title = name(feat) + " " + v.toFixed(3);
      if (d.signed) { e.style.background = M.div(v / m); e.style.color = M.ink(v / m); return; }
      const a = Math.max(0, v / m);
      e.style.background = "rgba(240,120,20," + a.toFixed(3) + ")"; e.style.color = a > 0.6 ? "#fff" : "#222";
    });
  }
  paint();
}
"""
