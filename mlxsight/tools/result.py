"""``Result``: the base of every toolkit result (plain data in, pictures through ``mlxsight.views``).

A result is a dataclass of plain data (numpy arrays, lists of str/int/float) whose fields its class
documents. Rendering lives in ``mlxsight.views``, imported only when a picture is asked for, so the
toolkit works without it: ``.plot(**kw)`` is ``mlxsight.views.plot(result, **kw)`` (a matplotlib
figure), ``.to_html(**kw)`` is ``mlxsight.views.to_html(result, **kw)`` (one self-contained page),
``.save_html(path)`` writes that page, and notebooks show ``_repr_html_()``.

Subclasses are declared ``@dataclass(repr=False)`` so they keep the short ``repr`` below (field
names with array shapes) instead of printing every array.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np


def _views() -> Any:
    try:
        import mlxsight.views as views
    except ModuleNotFoundError as e:
        if e.name not in ("mlxsight.views",):
            raise  # the views package is there, but something it needs is not: say that
        raise ImportError("rendering a result needs the mlxsight.views package, which this install of "
                          "mlxsight does not have") from e
    return views


@dataclass(repr=False)
class Result:
    """Base class of toolkit results: plain data plus ``plot``/``to_html``/``save_html``."""

    def plot(self, **kw: Any) -> Any:
        """A matplotlib figure of this result (``mlxsight.views.plot``)."""
        return _views().plot(self, **kw)

    def to_html(self, **kw: Any) -> str:
        """A self-contained, offline HTML view of this result (``mlxsight.views.to_html``)."""
        return _views().to_html(self, **kw)

    def save_html(self, path: str | Path, **kw: Any) -> Path:
        """Write ``to_html(**kw)`` to ``path`` (UTF-8) and return the path."""
        path = Path(path)
        path.write_text(self.to_html(**kw), encoding="utf-8")
        return path

    def _repr_html_(self) -> str | None:
        try:
            views = _views()
        except ImportError:
            return None  # no views package: notebooks fall back to the plain repr
        return views.to_html(self)

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                parts.append(f"{f.name}=array{list(value.shape)} {value.dtype}")
            elif isinstance(value, (list, tuple)) and (len(value) > 8 or any(isinstance(v, (list, tuple))
                                                                                for v in value)):
                parts.append(f"{f.name}=[{len(value)} items]")
            else:
                parts.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"
