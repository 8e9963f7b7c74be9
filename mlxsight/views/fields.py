"""The fallback view of any dataclass result without a view of its own: a table of its fields.

Arrays show their shape and dtype, short values themselves, so every toolkit result displays in a
notebook; ``plot`` says that this kind of result has no picture.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .page import esc


def _describe(value: Any) -> tuple[str, str]:
    shape = getattr(value, "shape", None)
    if shape is not None and not np.isscalar(value):
        return type(value).__name__, f"shape {list(shape)}, {getattr(value, 'dtype', '')}"
    if isinstance(value, (list, tuple)) and len(value) > 8:
        return type(value).__name__, f"{len(value)} items: {value[:3]!r}\u2026"
    text = repr(value)
    return type(value).__name__, text if len(text) <= 200 else text[:199] + "\u2026"


def to_html(result: Any, *, title: str | None = None) -> str:
    rows = "".join(f"<tr><th>{esc(f.name)}</th><td>{esc(kind)}</td><td>{esc(text)}</td></tr>"
                   for f in dataclasses.fields(result) for kind, text in [_describe(getattr(result, f.name))])
    doc = (result.__doc__ or "").strip().split("\n\n")[0]
    return (f'<div class="mlxs-fields"><b>{esc(title or type(result).__name__)}</b>'
            f'<div style="color:#555;max-width:60em">{esc(doc)}</div>'
            f'<table style="border-collapse:collapse;font:12px ui-monospace,Menlo,Consolas,monospace">{rows}</table></div>')


def plot(result: Any, **kw: Any) -> Any:
    raise TypeError(f"{type(result).__name__} has no plot; its fields are plain data (see to_html or repr)")
