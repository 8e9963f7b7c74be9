"""The app's pages: a navigation bar, one form per explorer, and a frame or text box for the answer.

The answer of an analysis is the view's own HTML document (``mlxsight.views``), shown in an
``<iframe srcdoc>``; generated text is streamed and appended with ``textContent``. Everything is
inline, like the views: the app works with no network.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..views.page import esc


@dataclass(frozen=True)
class Field:
    name: str
    label: str
    default: str = ""
    kind: str = "text"  # text | textarea | number | select | range
    options: tuple = ()
    lo: float = 0
    hi: float = 0
    step: float = 1


@dataclass(frozen=True)
class Page:
    title: str
    blurb: str
    fields: tuple
    endpoint: str  # /api/<name> (HTML answer) or /stream/<name> (streamed text)


PROMPT = "Once upon a time, there was a little girl named Lily. She"


def explorers(with_sae: bool, n_layers: int) -> dict[str, Page]:
    pages = {
        "lens": Page("Logit lens", "Each layer's residual stream read through the final norm and unembedding.",
                     (Field("prompt", "prompt", PROMPT, "textarea"),
                      Field("top_k", "top k", "5", "number", lo=1, hi=20)),
                     "/api/lens"),
        "patching": Page("Activation patching", "Patch the clean run's activations into the corrupted run, layer by "
                         "position (or head); the metric is logit(good) - logit(bad) at the last position. "
                         "Attribution estimates the same grid from one backward pass.",
                         (Field("clean", "clean prompt", "Once upon a time there was a girl named Lily. One day",
                                "textarea"),
                          Field("corrupted", "corrupted prompt", "Once upon a time there was a girl named Tim. One day",
                                "textarea"),
                          Field("good", "good token", " Lily"), Field("bad", "bad token", " Tim"),
                          Field("component", "component", "resid", "select", ("resid", "attn", "mlp", "heads")),
                          Field("method", "method", "activation", "select", ("activation", "attribution"))),
                         "/api/patching"),
        "attention": Page("Attention patterns", "Hover a token: what it attends to, what attends to it.",
                          (Field("prompt", "prompt", PROMPT, "textarea"),), "/api/attention"),
        "heads": Page("Head scores", "How strongly each head shows a known pattern.",
                      (Field("kind", "kind", "induction", "select",
                             ("previous_token", "duplicate_token", "induction", "first_token")),), "/api/heads"),
        "steering": Page("Contrastive steering", "Add scale x (mean residual of positive - negative) at one layer "
                         "while generating; move the slider to regenerate.",
                         (Field("positive", "positive", "I am very happy and glad"),
                          Field("negative", "negative", "I am very sad and angry"),
                          Field("layer", "layer", str(n_layers // 2), "number", lo=0, hi=n_layers - 1),
                          Field("prompt", "prompt", "Once upon a time", "textarea"),
                          Field("scale", "scale", "1", "range", lo=-8, hi=8, step=0.5),
                          Field("max_new_tokens", "new tokens", "48", "number", lo=1, hi=200)),
                         "/stream/steer"),
        "playground": Page("Playground", "The base model, continuing your text.",
                           (Field("prompt", "prompt", "Once upon a time", "textarea"),
                            Field("max_new_tokens", "new tokens", "48", "number", lo=1, hi=200),
                            Field("temperature", "temperature", "0", "number", lo=0, hi=2, step=0.1)),
                           "/stream/generate"),
    }
    if with_sae:
        pages["sae"] = Page("SAE features", "The SAE's features over your text.",
                            (Field("prompt", "prompt", PROMPT, "textarea"),), "/api/sae")
    return pages


def _field(f: Field) -> str:
    name, value = esc(f.name), esc(f.default)
    if f.kind == "textarea":
        control = f'<textarea name="{name}" rows="2" cols="70">{value}</textarea>'
    elif f.kind == "select":
        options = "".join(f'<option{" selected" if o == f.default else ""}>{esc(o)}</option>' for o in f.options)
        control = f'<select name="{name}">{options}</select>'
    elif f.kind == "range":
        control = (f'<input type="range" name="{name}" value="{value}" min="{f.lo}" max="{f.hi}" step="{f.step}">'
                   f'<output data-for="{name}">{value}</output>')
    elif f.kind == "number":
        control = f'<input type="number" name="{name}" value="{value}" min="{f.lo}" max="{f.hi}" step="{f.step}">'
    else:
        control = f'<input type="text" name="{name}" value="{value}" size="30">'
    return f'<label>{esc(f.label)} {control}</label>'


def page(name: str, pages: dict[str, Page], *, model_name: str = "", n_layers: int = 0) -> str:
    nav = " ".join(f'<a href="/{esc(k)}"{" class=on" if k == name else ""}>{esc(p.title)}</a>'
                   for k, p in pages.items())
    if name == "index":
        items = "".join(f'<li><a href="/{esc(k)}">{esc(p.title)}</a>: {esc(p.blurb)}</li>' for k, p in pages.items())
        body = (f"<h1>mlxsight explorers</h1><p>model: <code>{esc(model_name)}</code> ({n_layers} layers)</p>"
                f"<ul>{items}</ul>")
    else:
        p = pages[name]
        stream = p.endpoint.startswith("/stream/")
        fields = "".join(_field(f) for f in p.fields)
        answer = '<pre id="out" class="out"></pre>' if stream else '<iframe id="out" title="result"></iframe>'
        body = (f'<h1>{esc(p.title)}</h1><p class="blurb">{esc(p.blurb)}</p>'
                f'<form id="form" data-endpoint="{esc(p.endpoint)}">{fields}<button type="submit">run</button>'
                f'<span id="status"></span></form><div id="error" class="error"></div>{answer}')
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>mlxsight: {esc(name)}</title>'
            f'<link rel="icon" href="data:,">'
            f'<style>{STYLE}</style></head><body><nav>{nav}</nav><main>{body}</main><script>{SCRIPT}</script>'
            f'</body></html>')


STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#222}
nav{background:#24292f;padding:8px 12px}nav a{color:#ddd;margin-right:14px;text-decoration:none}
nav a.on{color:#fff;font-weight:bold}main{padding:8px 16px}h1{font-size:20px;margin:6px 0}
.blurb{color:#555;margin:2px 0 8px}form{display:flex;flex-wrap:wrap;gap:10px 16px;align-items:flex-end;margin-bottom:8px}
label{display:flex;flex-direction:column;font-size:12px;color:#444;gap:2px}
textarea,input,select{font:13px ui-monospace,Menlo,Consolas,monospace}
button{padding:4px 14px}#status{color:#666;font-size:12px}.error{color:#b00;white-space:pre-wrap}
iframe{width:100%;border:1px solid #ddd;min-height:120px}
pre.out{white-space:pre-wrap;border:1px solid #ddd;padding:8px;min-height:4em;font-size:13px}
"""

SCRIPT = r"""
(function () {
  const form = document.getElementById("form");
  if (!form) return;
  const out = document.getElementById("out"), err = document.getElementById("error"), status = document.getElementById("status");
  const endpoint = form.dataset.endpoint, stream = endpoint.startsWith("/stream/");
  let running = null;
  form.querySelectorAll("input[type=range]").forEach(r => {
    const o = form.querySelector("output[data-for='" + r.name + "']");
    r.addEventListener("input", () => { o.textContent = r.value; });
    r.addEventListener("change", () => run());  // the slider regenerates
  });
  form.addEventListener("submit", ev => { ev.preventDefault(); run(); });
  function values() {
    const v = {};
    new FormData(form).forEach((x, k) => { v[k] = x; });
    return v;
  }
  async function run() {
    if (running) running.abort();
    const ctl = new AbortController(); running = ctl;
    err.textContent = ""; status.textContent = "running\u2026"; document.body.dataset.state = "running";
    try {
      const r = await fetch(endpoint, {method: "POST", headers: {"Content-Type": "application/json"},
                                       body: JSON.stringify(values()), signal: ctl.signal});
      if (!r.ok) { const j = await r.json().catch(() => ({error: r.statusText})); throw new Error(j.error); }
      if (stream) {
        out.textContent = form.elements.prompt ? form.elements.prompt.value : "";
        const reader = r.body.getReader(), dec = new TextDecoder();
        for (;;) { const {done, value} = await reader.read(); if (done) break; out.textContent += dec.decode(value, {stream: true}); }
      } else {
        const j = await r.json();
        await new Promise(res => {
          out.onload = () => {
            const doc = out.contentDocument, fit = () => { out.style.height = (doc.documentElement.scrollHeight + 24) + "px"; };
            fit(); new ResizeObserver(fit).observe(doc.body); res();
          };
          out.srcdoc = j.html;
        });
      }
      if (running === ctl) { status.textContent = "done"; document.body.dataset.state = "done"; }
    } catch (e) {
      if (e.name === "AbortError") return;
      err.textContent = String(e.message || e); status.textContent = ""; document.body.dataset.state = "error";
    }
  }
})();
"""
