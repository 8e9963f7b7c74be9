"""matplotlib helpers shared by the views' ``plot`` functions (the ``plots`` extra)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .page import display_token


def axes(ax: Any = None, figsize: tuple[float, float] = (8, 5)) -> tuple[Any, Any]:
    """``(figure, axes)``: the caller's ``ax`` and its figure, or a new ``Figure`` outside pyplot's state."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("plots need matplotlib: pip install 'mlxsight[plots]'") from exc
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def label(token: Any) -> str:
    """A token as a matplotlib label: visible whitespace, and ``$`` kept literal (not mathtext)."""
    return display_token(str(token)).replace("$", r"\$")


def heatmap(ax: Any, values: np.ndarray, *, xlabels: Sequence[str], ylabels: Sequence[Any], cmap: str = "Blues",
            center: bool = False, colorbar: str = "", annotations: np.ndarray | None = None,
            vmin: float | None = None, vmax: float | None = None) -> Any:
    """``values`` [rows, cols] as an image with token labels; ``center`` makes a diverging scale around 0."""
    kw: dict = {"cmap": cmap, "aspect": "auto", "interpolation": "nearest", "vmin": vmin, "vmax": vmax}
    if center:
        bound = float(np.nanmax(np.abs(values))) or 1.0
        kw.update(vmin=-bound, vmax=bound)
    image = ax.imshow(values, **kw)
    ax.set_xticks(range(len(xlabels)), [label(t) for t in xlabels], rotation=90, fontsize=8)
    ax.set_yticks(range(len(ylabels)), [label(y) for y in ylabels], fontsize=8)
    if annotations is not None and annotations.size <= 900:
        norm = image.norm
        for (i, j), text in np.ndenumerate(annotations):
            dark = abs(norm(values[i, j]) - (0.5 if center else 0.0)) > (0.3 if center else 0.6)
            ax.text(j, i, label(text), ha="center", va="center", fontsize=6, color="white" if dark else "black")
    ax.figure.colorbar(image, ax=ax, label=colorbar, shrink=0.8)
    return image
