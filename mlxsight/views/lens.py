"""Logit/tuned lens: a layers x positions grid of each cell's top token, coloured by its probability.

Hovering a cell shows its top-k tokens with their probabilities (and, given targets, the target's
probability, NLL and rank); the colour can follow the top-1 probability or the target's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import figure
from .page import display_token, document, floats, to_numpy


def _fields(result: Any) -> dict:
    top_probs = to_numpy(result.top_probs)
    top_tokens = _top_tokens(result, top_probs.shape)
    tokens = list(result.tokens)
    positions = getattr(result, "positions", None)  # the input position of each column
    positions = list(range(top_probs.shape[1])) if positions is None else [int(p) for p in positions]
    nll = getattr(result, "target_nll", None)
    rank = getattr(result, "target_rank", None)
    layers = [int(x) for x in result.layers]
    labels = getattr(result, "labels", None)
    return {
        "layers": layers, "labels": [str(x) for x in labels] if labels else [str(x) for x in layers],
        "tokens": [str(tokens[p]) for p in positions], "positions": positions,
        "top_probs": top_probs, "top_tokens": top_tokens,
        "nll": None if nll is None else to_numpy(nll), "rank": None if rank is None else to_numpy(rank, np.int64),
        "kind": str(getattr(result, "kind", "logit")),
    }


def _top_tokens(result: Any, shape: tuple) -> list:
    tokens = getattr(result, "top_tokens", None)
    if tokens is None:  # ids only: show them as ids
        return [[[f"#{i}" for i in row] for row in layer] for layer in to_numpy(result.top_ids, np.int64).tolist()]
    tokens = np.asarray(tokens, dtype=object).reshape(shape)
    return [[[str(t) for t in row] for row in layer] for layer in tokens]


def to_html(result: Any, *, title: str | None = None) -> str:
    f = _fields(result)
    vocab: dict[str, int] = {}
    ids = [[[vocab.setdefault(display_token(t), len(vocab)) for t in row] for row in layer]
           for layer in f["top_tokens"]]
    data = {
        "layers": f["labels"], "tokens": [display_token(t) for t in f["tokens"]], "pos": f["positions"],
        "vocab": list(vocab),
        "top": ids, "probs": floats(f["top_probs"]),
        "nll": None if f["nll"] is None else floats(f["nll"]),
        "rank": None if f["rank"] is None else f["rank"].tolist(),
    }
    n_layers, T, k = f["top_probs"].shape
    return document("lens", title or f"{f['kind']} lens", data, SCRIPT,
                    subtitle=f"{n_layers} layers x {T} positions, top {k}")


def plot(result: Any, *, ax: Any = None, color: str = "top", title: str | None = None) -> Any:
    """The lens grid: colour = top-1 probability (``color="top"``) or the target's (``"target"``), text = top token."""
    f = _fields(result)
    values = f["top_probs"][..., 0]
    label = "top-1 probability"
    if color == "target":
        if f["nll"] is None:
            raise ValueError("this lens result has no targets")
        values, label = np.exp(-f["nll"]), "target probability"
    fig, ax = figure.axes(ax, figsize=(max(6, 0.6 * len(f["tokens"]) + 2), max(3, 0.35 * len(f["layers"]) + 1.5)))
    annotations = np.array([[row[0] for row in layer] for layer in f["top_tokens"]], dtype=object)
    figure.heatmap(ax, values, xlabels=f["tokens"], ylabels=f["labels"], colorbar=label, annotations=annotations,
                   vmin=0, vmax=1)
    ax.set_xlabel("input token")
    ax.set_ylabel("layer")
    ax.set_title(title or f"{f['kind']} lens")
    return fig


SCRIPT = r"""
function (root, d, M) {
  const L = d.layers.length, T = d.tokens.length, K = d.probs[0][0].length;
  const modes = [["top", "top-1 probability"]];
  if (d.nll) modes.push(["target", "target probability"], ["rank", "target rank (0 = most probable)"]);
  let mode = "top";
  const ctrl = M.el("div", "mlxs-ctrl"); root.appendChild(ctrl);
  if (modes.length > 1) ctrl.appendChild(M.select("colour", modes, v => { mode = v; paint(); }));
  const info = M.el("div", "mlxs-info");  // below the grid: filling it never moves the cells
  info.textContent = "hover a cell for its top " + K + " tokens";
  const tip = M.tip(root);
  const table = M.el("table", "mlxs-grid"), cells = [];
  const head = M.el("tr"); head.appendChild(M.el("th", null, "layer"));
  d.tokens.forEach((t, j) => { const th = M.el("th", null, t); th.title = "position " + d.pos[j]; head.appendChild(th); });
  table.appendChild(head);
  for (let i = 0; i < L; i++) {
    const tr = M.el("tr"); tr.appendChild(M.el("th", null, d.layers[i])); cells.push([]);
    for (let j = 0; j < T; j++) {
      const td = M.el("td", null, d.vocab[d.top[i][j][0]]);
      td.dataset.layer = d.layers[i]; td.dataset.pos = d.pos[j];
      td.addEventListener("mouseenter", ev => { const s = describe(i, j); info.textContent = s; tip.show(ev, s); td.classList.add("hot"); });
      td.addEventListener("mousemove", ev => tip.show(ev, tip.el.textContent));
      td.addEventListener("mouseleave", () => { tip.hide(); td.classList.remove("hot"); });
      tr.appendChild(td); cells[i].push(td);
    }
    table.appendChild(tr);
  }
  root.appendChild(table); root.appendChild(info);
  function value(i, j) {
    if (mode === "top") return d.probs[i][j][0];
    if (mode === "target") return Math.exp(-d.nll[i][j]);
    return 1 - Math.log(1 + d.rank[i][j]) / Math.log(1e4);  // rank 0 -> 1, 10^4 -> 0
  }
  function describe(i, j) {
    const lines = ["layer " + d.layers[i] + ", position " + d.pos[j] + " " + JSON.stringify(d.tokens[j])];
    for (let r = 0; r < K; r++) lines.push((r + 1) + ". " + JSON.stringify(d.vocab[d.top[i][j][r]]) + " " + M.fmt(d.probs[i][j][r], 4));
    if (d.nll) lines.push("target: p " + M.fmt(Math.exp(-d.nll[i][j]), 4) + ", nll " + M.fmt(d.nll[i][j], 4) + ", rank " + d.rank[i][j]);
    return lines.join("\n");
  }
  function paint() {
    for (let i = 0; i < L; i++) for (let j = 0; j < T; j++) {
      const v = value(i, j), td = cells[i][j];
      td.style.background = M.seq(v); td.style.color = M.ink(v);
    }
  }
  paint();
}
"""
