"""The HTML page every view is built on: inline style and script, data encoding, escaping.

A view is a Python function that turns a result into plain data (``dict``s, lists, encoded arrays) and
a small vanilla-JS function that builds the page from that data in the browser. Nothing is fetched:
style, script and data are inline, so a saved file works from ``file://``, in Jupyter and in the web
app's frames alike (one rendering path).

Escaping has two rules. Text placed by Python goes through :func:`esc`; text placed by the script is
always set with ``textContent`` (never ``innerHTML``), and the data block is JSON with ``<``, ``>``
and ``&`` written as ``\\uXXXX`` so no token can close the ``<script>`` element it travels in.

Large arrays (an attention view of 12 x 12 x 256 x 256) travel quantised to ``uint8`` over a stated
range, lower triangles only when the matrices are causal, deflate-compressed and base64-encoded;
the browser inflates them with its built-in ``DecompressionStream``.
"""

from __future__ import annotations

import base64
import html
import json
import secrets
import zlib
from typing import Any

import numpy as np

__all__ = ["esc", "encode_array", "display_token", "document", "floats", "to_numpy"]


def esc(text: Any) -> str:
    """``text`` as HTML text, quotes included."""
    return html.escape(str(text), quote=True)


def display_token(token: str) -> str:
    """A token as shown on the page: SentencePiece's word marker as a space, newlines and tabs visible."""
    return str(token).replace("\u2581", " ").replace("\u0120", " ").replace("\n", "\u21b5").replace("\t", "\u21e5")


def to_numpy(value: Any, dtype: Any = np.float32) -> np.ndarray:
    """Any array (mx, torch, numpy, nested lists) as a numpy array of ``dtype``."""
    if hasattr(value, "detach"):  # torch, without importing it
        value = value.detach().float().cpu().numpy()
    elif type(value).__module__.startswith("mlx"):
        import mlx.core as mx

        value = np.asarray(value.astype(mx.float32)) if np.dtype(dtype).kind == "f" else np.asarray(value)
    return np.asarray(value, dtype=dtype)


def floats(values: Any) -> list:
    """``values`` as nested lists of exact floats (the page prints them as Python would); non-finite as None."""
    a = to_numpy(values, np.float64)
    out = np.where(np.isfinite(a), a, np.nan).tolist()

    def clean(x: Any) -> Any:
        return [clean(v) for v in x] if isinstance(x, list) else (None if x != x else x)

    return clean(out)


def encode_array(values: Any, lo: float | None = None, hi: float | None = None) -> dict:
    """``values`` quantised to 256 levels over ``[lo, hi]``, deflated and base64-encoded.

    Arrays whose last two axes are square and zero above the diagonal (causal attention) keep only the
    lower triangle. The JS side (``MLXS.decode``) returns a ``Float32Array`` of the full shape; a
    decoded value is within ``(hi - lo) / 510`` of the original.
    """
    a = to_numpy(values)
    lo = float(np.nanmin(a)) if lo is None else float(lo)
    hi = float(np.nanmax(a)) if hi is None else float(hi)
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise ValueError("cannot encode an array without finite values")
    span = (hi - lo) or 1.0
    q = np.rint((np.clip(np.nan_to_num(a, nan=lo), lo, hi) - lo) / span * 255).astype(np.uint8)
    tri = a.ndim >= 2 and a.shape[-1] == a.shape[-2] and a.shape[-1] > 1 and not np.triu(a, 1).any()
    payload = q[(..., *np.tril_indices(a.shape[-1]))] if tri else q
    return {"shape": list(a.shape), "lo": lo, "hi": hi, "tri": bool(tri),
            "b64": base64.b64encode(zlib.compress(np.ascontiguousarray(payload).tobytes(), 6)).decode("ascii")}


def _script_json(data: Any) -> str:
    """JSON that is safe inside ``<script>``: no ``<``, ``>`` or ``&`` can end or open a tag."""
    text = json.dumps(data, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def document(view: str, title: str, data: dict, script: str, subtitle: str = "") -> str:
    """A complete HTML document that also works as a fragment (Jupyter drops the doctype and keeps the rest).

    ``script`` is the view's JS: a function ``(root, data, M)`` registered as ``MLXS.views[view]``;
    ``root`` is the view's own element, so several views on one notebook page stay apart.
    """
    uid = "mlxs-" + secrets.token_hex(6)
    head = f'<div class="mlxs-head"><b>{esc(title)}</b> <span class="mlxs-sub">{esc(subtitle)}</span></div>'
    return (f'<!DOCTYPE html>\n<meta charset="utf-8">\n<title>{esc(title)}</title>\n'
            f'<div class="mlxs" id="{uid}" data-view="{esc(view)}">\n<style>{STYLE}</style>\n{head}\n'
            f'<div class="mlxs-body">loading\u2026</div>\n'
            f'<script>{LIBRARY}\nMLXS.views[{_script_json(view)}] = {script};\n'
            f'MLXS.mount({_script_json(uid)}, {_script_json(view)}, {_script_json(data)}, document.currentScript);'
            f'</script>\n</div>\n')


STYLE = """
.mlxs{font:13px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;color:#222;background:#fff;padding:8px;max-width:100%}
.mlxs *{box-sizing:border-box}
.mlxs-head{margin-bottom:6px}.mlxs-sub{color:#666}
.mlxs-ctrl{display:flex;flex-wrap:wrap;gap:12px;align-items:center;margin:6px 0}
.mlxs-ctrl label{display:flex;gap:4px;align-items:center}
.mlxs-tok{display:inline-block;white-space:pre;padding:1px 2px;margin:1px;border-radius:3px;border:1px solid #ddd;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;cursor:default}
.mlxs-tok.sel{outline:2px solid #d33}
.mlxs-strip{margin:4px 0;line-height:1.9}
.mlxs-grid{border-collapse:collapse;font-size:11px}
.mlxs-grid td,.mlxs-grid th{border:1px solid #eee;padding:1px 3px;text-align:center;white-space:pre;max-width:90px;overflow:hidden;text-overflow:ellipsis;font-family:ui-monospace,Menlo,Consolas,monospace}
.mlxs-grid th{background:#f6f6f6;font-weight:normal;color:#444}
.mlxs-grid td.hot{outline:2px solid #d33}
.mlxs-tip{position:fixed;z-index:10;pointer-events:none;background:#fffffa;border:1px solid #aaa;border-radius:4px;padding:4px 6px;font-size:12px;box-shadow:0 2px 6px rgba(0,0,0,.2);display:none;white-space:pre;font-family:ui-monospace,Menlo,Consolas,monospace}
.mlxs-info{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;white-space:pre;min-height:1.4em;color:#333}
.mlxs-heads{display:flex;flex-wrap:wrap;gap:6px;margin:6px 0}
.mlxs-heads figure{margin:0;text-align:center;font-size:11px;cursor:pointer;border:2px solid transparent}
.mlxs-heads figure.sel{border-color:#d33}
.mlxs canvas{image-rendering:pixelated;border:1px solid #ccc}
.mlxs-text{white-space:pre-wrap;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;border:1px solid #eee;padding:6px;margin:4px 0}
.mlxs-prompt{font-weight:bold}
.mlxs-err{color:#b00}
"""

LIBRARY = r"""
// One shared library per page (a notebook holds many views); a newer mlxsight replaces an older one.
if (!window.MLXS || window.MLXS.version !== 1) window.MLXS = (function () {
  const M = {views: {}, version: 1};
  M.el = function (tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  };
  M.decode = async function (spec) {
    const raw = Uint8Array.from(atob(spec.b64), c => c.charCodeAt(0));
    const stream = new Blob([raw]).stream().pipeThrough(new DecompressionStream("deflate"));
    const q = new Uint8Array(await new Response(stream).arrayBuffer());
    const n = spec.shape.reduce((a, b) => a * b, 1), out = new Float32Array(n);
    const scale = (spec.hi - spec.lo) / 255, lo = spec.lo;
    if (!spec.tri) { for (let i = 0; i < n; i++) out[i] = lo + q[i] * scale; return out; }
    const T = spec.shape[spec.shape.length - 1], per = T * (T + 1) / 2;
    for (let m = 0, k = 0; m < n / (T * T); m++) {
      const base = m * T * T;
      for (let i = 0; i < T; i++) for (let j = 0; j <= i; j++) out[base + i * T + j] = lo + q[k++] * scale;
      if (lo !== 0) for (let i = 0; i < T; i++) for (let j = i + 1; j < T; j++) out[base + i * T + j] = lo;
    }
    return out;
  };
  // Sequential colour: white -> blue. Diverging: red (negative) - white - blue (positive).
  M.seq = function (v) {
    v = Math.max(0, Math.min(1, v || 0));
    return "rgb(" + Math.round(255 - 205 * v) + "," + Math.round(255 - 155 * v) + "," + Math.round(255 - 35 * v) + ")";
  };
  M.div = function (v) {
    v = Math.max(-1, Math.min(1, v || 0));
    if (v >= 0) return M.seq(v);
    const a = -v;
    return "rgb(" + Math.round(255 - 35 * a) + "," + Math.round(255 - 185 * a) + "," + Math.round(255 - 185 * a) + ")";
  };
  M.ink = function (v) { return Math.abs(v) > 0.6 ? "#fff" : "#222"; };
  M.fmt = function (v, d) { return (v === null || v === undefined) ? "\u2013" : Number(v).toFixed(d === undefined ? 3 : d); };
  M.tip = function (root) {
    const t = M.el("div", "mlxs-tip"); root.appendChild(t);
    return {
      show(ev, text) { t.textContent = text; t.style.display = "block";
        t.style.left = (ev.clientX + 12) + "px"; t.style.top = (ev.clientY + 12) + "px"; },
      hide() { t.style.display = "none"; },
      el: t,
    };
  };
  M.select = function (label, options, onchange) {
    const l = M.el("label", null, label + " "), s = M.el("select");
    options.forEach(([value, text]) => { const o = M.el("option", null, text); o.value = String(value); s.appendChild(o); });
    s.addEventListener("change", () => onchange(s.value));
    l.appendChild(s); l.select = s; return l;
  };
  M.mount = function (id, view, data, script, tries) {
    // The view's own element: around the running script (notebooks may run it before the output is
    // in the document), else by id once it is there.
    const root = (script && script.closest(".mlxs")) || document.getElementById(id);
    if (!root) {
      if ((tries || 0) < 100) requestAnimationFrame(() => M.mount(id, view, data, null, (tries || 0) + 1));
      return;
    }
    const body = root.querySelector(".mlxs-body");
    Promise.resolve().then(() => { body.textContent = ""; return M.views[view](body, data, M); })
      .then(() => { root.dataset.ready = "1"; })
      .catch(err => { body.textContent = ""; body.appendChild(M.el("div", "mlxs-err", "view failed: " + err));
                      console.error(err); });
  };
  return M;
})();
"""
