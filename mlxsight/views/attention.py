"""Attention patterns: hover a token to see what it attends to and what attends to it; switch layers and
heads; a grid of every head's pattern in the layer (click one to select it); the selected pattern large.

Weights travel quantised to 256 levels over [0, 1] (lower triangles of causal patterns only, deflated):
values on the page are within 0.002 of the result's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import figure
from .page import display_token, document, encode_array, to_numpy


def _weights(result: Any) -> np.ndarray:
    w = to_numpy(getattr(result, "weights", result))
    if w.ndim != 4 or w.shape[-1] != w.shape[-2]:
        raise ValueError(f"attention weights must be [layers, heads, T, T], got {list(w.shape)}")
    return w


def _layers(result: Any, n: int) -> list[int]:
    layers = getattr(result, "layers", None)
    return list(range(n)) if layers is None else [int(x) for x in layers]


def to_html(result: Any, *, title: str | None = None) -> str:
    w = _weights(result)
    L, H, T, _ = w.shape
    data = {"weights": encode_array(w, 0.0, 1.0), "layers": _layers(result, L),
            "tokens": [display_token(t) for t in result.tokens]}
    return document("attention", title or "attention patterns", data, SCRIPT,
                    subtitle=f"{L} layers x {H} heads x {T} tokens")


def plot(result: Any, *, layer: int | None = None, head: int | None = None, ax: Any = None,
         title: str | None = None) -> Any:
    """One head's pattern (``layer``/``head`` as in ``result.layers``), or the grid of a layer's heads when
    ``head`` is None (``layer`` defaults to the first)."""
    w = _weights(result)
    layers = _layers(result, w.shape[0])
    li = layers.index(layers[0] if layer is None else layer)
    tokens = list(result.tokens)
    if head is not None:
        fig, ax = figure.axes(ax, figsize=(7, 6))
        figure.heatmap(ax, w[li, head], xlabels=tokens, ylabels=tokens,
                       colorbar="attention weight", vmin=0, vmax=1)
        ax.set_xlabel("key (attended to)")
        ax.set_ylabel("query (attending)")
        ax.set_title(title or f"layer {layers[li]}, head {head}")
        return fig
    H = w.shape[1]
    cols = min(H, 6)
    rows = -(-H // cols)
    fig, _ = figure.axes(None, figsize=(2.2 * cols, 2.2 * rows + 0.4))
    fig.clear()
    for h in range(H):
        sub = fig.add_subplot(rows, cols, h + 1)
        sub.imshow(w[li, h], cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
        sub.set_title(f"head {h}", fontsize=9)
        sub.set_xticks([])
        sub.set_yticks([])
    fig.suptitle(title or f"attention, layer {layers[li]}")
    return fig


SCRIPT = r"""
async function (root, d, M) {
  const W = await M.decode(d.weights);
  const [L, H, T] = d.weights.shape;
  let li = 0, head = 0, sel = T - 1;
  const at = (l, h, i, j) => {
    if (h >= 0) return W[((l * H + h) * T + i) * T + j];
    let s = 0; for (let k = 0; k < H; k++) s += W[((l * H + k) * T + i) * T + j]; return s / H;
  };
  const ctrl = M.el("div", "mlxs-ctrl"); root.appendChild(ctrl);
  const layerSel = M.select("layer", d.layers.map((x, i) => [i, x]), v => { li = +v; drawGrid(); update(); });
  const headSel = M.select("head", [...Array(H).keys()].map(h => [h, h]).concat([[-1, "mean of heads"]]),
                           v => { head = +v; update(); });
  ctrl.appendChild(layerSel); ctrl.appendChild(headSel);
  const info = M.el("div", "mlxs-info"); root.appendChild(info);
  const strips = [["attends to", (i, j) => at(li, head, sel, j)], ["is attended by", (i, j) => at(li, head, j, sel)]];
  const spans = [];
  strips.forEach(([name, f], s) => {
    const label = M.el("div", "mlxs-sub"); root.appendChild(label);  // own line: tokens never move on hover
    const row = M.el("div", "mlxs-strip"); row.dataset.strip = s ? "from" : "to"; spans.push({label, toks: []});
    d.tokens.forEach((t, j) => {
      const e = M.el("span", "mlxs-tok", t); e.dataset.pos = j;
      e.addEventListener("mouseenter", () => { sel = j; update(); });
      row.appendChild(e); spans[s].toks.push(e);
    });
    root.appendChild(row);
  });
  const grid = M.el("div", "mlxs-heads"); root.appendChild(grid);
  const big = M.el("canvas"); big.width = T; big.height = T;
  const px = Math.max(200, Math.min(560, T * 6)); big.style.width = big.style.height = px + "px";
  root.appendChild(big);
  const tip = M.tip(root);
  big.addEventListener("mousemove", ev => {
    const r = big.getBoundingClientRect();
    const i = Math.min(T - 1, Math.floor((ev.clientY - r.top) / r.height * T)), j = Math.min(T - 1, Math.floor((ev.clientX - r.left) / r.width * T));
    if (j > i && d.weights.tri) { tip.hide(); return; }
    tip.show(ev, "query " + i + " " + JSON.stringify(d.tokens[i]) + "\nkey " + j + " " + JSON.stringify(d.tokens[j]) + "\nweight " + M.fmt(at(li, head, i, j)));
  });
  big.addEventListener("mouseleave", () => tip.hide());
  function paintCanvas(c, h) {
    const ctx = c.getContext("2d"), img = ctx.createImageData(T, T);
    for (let i = 0; i < T; i++) for (let j = 0; j < T; j++) {
      const v = Math.min(1, at(li, h, i, j) * 1.0), o = (i * T + j) * 4;
      img.data[o] = 255 - 205 * v; img.data[o + 1] = 255 - 155 * v; img.data[o + 2] = 255 - 35 * v; img.data[o + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
  }
  function drawGrid() {
    grid.textContent = "";
    for (let h = -1; h < H; h++) {
      const fig = M.el("figure"), c = M.el("canvas"); c.width = T; c.height = T; c.style.width = c.style.height = "72px";
      fig.dataset.head = h; paintCanvas(c, h); fig.appendChild(c);
      fig.appendChild(M.el("figcaption", null, h < 0 ? "mean" : "head " + h));
      fig.addEventListener("click", () => { head = h; headSel.select.value = String(h); update(); });
      grid.appendChild(fig);
    }
  }
  function top(f) {
    const v = d.tokens.map((_, j) => [f(0, j), j]).sort((a, b) => b[0] - a[0]).slice(0, 5);
    return v.map(([x, j]) => JSON.stringify(d.tokens[j]) + "@" + j + " " + M.fmt(x)).join(", ");
  }
  function update() {
    const who = JSON.stringify(d.tokens[sel]) + "@" + sel;
    strips.forEach(([name, f], s) => {
      spans[s].label.textContent = who + " " + name + ":";
      let mx = 1e-9; for (let j = 0; j < T; j++) mx = Math.max(mx, f(0, j));
      spans[s].toks.forEach((e, j) => {
        const v = f(0, j); e.dataset.v = v.toFixed(3); e.title = v.toFixed(3);
        e.style.background = M.seq(v / mx); e.style.color = M.ink(v / mx); e.classList.toggle("sel", j === sel);
      });
    });
    info.textContent = "layer " + d.layers[li] + ", " + (head < 0 ? "mean of heads" : "head " + head) +
      "\n" + who + " attends to: " + top(strips[0][1]) + "\nattended by: " + top(strips[1][1]);
    grid.querySelectorAll("figure").forEach(f => f.classList.toggle("sel", +f.dataset.head === head));
    paintCanvas(big, head);
  }
  drawGrid(); update();
}
"""
