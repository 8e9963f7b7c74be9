"""Plots and self-contained interactive HTML for the toolkit's results.

``plot(result)`` returns a matplotlib ``Figure`` (the ``plots`` extra); ``to_html(result)`` returns one
HTML document with its style, script and data inline (no network, works from ``file://`` and in
Jupyter); ``save_html(result, path)`` writes it. Results call these themselves (``result.plot()``,
``result.to_html()``, ``result.save_html(path)``, and notebooks through ``_repr_html_``).

One module per result kind; the result's class is matched by name along its MRO, so views never
import the toolkit (which may pull in torch or nnsight) and any subclass finds its parent's view.
Any other dataclass result gets the fallback view (``fields``): a table of its fields.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["plot", "to_html", "save_html", "view_for"]

# result class name -> view module (mlxsight/views/<module>.py)
VIEWS = {
    "LensResult": "lens",
    "AttentionPatterns": "attention",
    "HeadScores": "heads",
    "PatchingResult": "patching",
    "SteeringResult": "steering",
    "ScaleSearch": "steering",
    "FeatureActivations": "sae",
    "FeatureAttribution": "sae",
    "TopContexts": "contexts",
}


def view_for(result: Any) -> ModuleType:
    """The view module for ``result`` (a module with ``plot(result, **kw)`` and ``to_html(result, **kw)``)."""
    for cls in type(result).__mro__:
        if cls.__name__ in VIEWS:
            return importlib.import_module(f"{__name__}.{VIEWS[cls.__name__]}")
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return importlib.import_module(f"{__name__}.fields")
    raise TypeError(f"no view for {type(result).__name__}; views exist for: {', '.join(sorted(VIEWS))}")


def plot(result: Any, **kw: Any) -> Any:
    """A matplotlib ``Figure`` of ``result`` (pass ``ax=`` to draw into your own axes)."""
    return view_for(result).plot(result, **kw)


def to_html(result: Any, **kw: Any) -> str:
    """``result`` as one self-contained interactive HTML document."""
    return view_for(result).to_html(result, **kw)


def save_html(result: Any, path: str | Path, **kw: Any) -> Path:
    """Write :func:`to_html` of ``result`` to ``path`` (UTF-8) and return the path."""
    path = Path(path)
    path.write_text(to_html(result, **kw), encoding="utf-8")
    return path
