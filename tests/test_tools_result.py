"""tools.Result: rendering dispatches to mlxsight.views lazily; the core never imports the toolkit."""

from __future__ import annotations

import ast
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import mlxsight
from mlxsight.tools import AttentionPatterns, HeadScores, LensResult, Result

ROOT = Path(__file__).resolve().parent.parent / "mlxsight"


def _patterns():
    w = np.full((1, 2, 3, 3), 1 / 3, dtype=np.float32)
    return AttentionPatterns(weights=w, layers=[0], tokens=["a", "b", "c"], input_ids=[1, 2, 3])


def test_dispatches_to_views(monkeypatch, tmp_path):
    calls = []
    fake = types.ModuleType("mlxsight.views")
    fake.plot = lambda result, **kw: calls.append(("plot", result, kw)) or "figure"
    fake.to_html = lambda result, **kw: calls.append(("html", result, kw)) or "<div>view</div>"
    monkeypatch.setitem(sys.modules, "mlxsight.views", fake)
    # once the real package was imported, `import mlxsight.views` finds it as the package's attribute
    monkeypatch.setattr(mlxsight, "views", fake, raising=False)
    r = _patterns()
    assert r.plot(head=1) == "figure" and calls[-1] == ("plot", r, {"head": 1})
    assert r.to_html(layer=0) == "<div>view</div>" and calls[-1] == ("html", r, {"layer": 0})
    out = r.save_html(tmp_path / "v.html")
    assert out.read_text(encoding="utf-8") == "<div>view</div>"
    assert r._repr_html_() == "<div>view</div>"


def test_missing_views_is_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxsight.views", None)  # import fails with ModuleNotFoundError
    r = _patterns()
    with pytest.raises(ImportError, match="mlxsight.views"):
        r.plot()
    with pytest.raises(ImportError, match="mlxsight.views"):
        r.to_html()
    assert r._repr_html_() is None  # notebooks fall back to the text repr


def test_results_are_plain_data_with_short_reprs():
    r = _patterns()
    assert np.asarray(r).shape == (1, 2, 3, 3) and isinstance(r, Result)
    assert "weights=array[1, 2, 3, 3] float32" in repr(r)
    h = HeadScores(scores=np.array([[0.1, 0.9], [0.5, 0.2]], dtype=np.float32), kind="induction",
                   tokens=["a"], input_ids=[1])
    assert h.top(2) == [(0, 1, pytest.approx(0.9)), (1, 0, pytest.approx(0.5))]
    assert issubclass(LensResult, Result)


def test_core_never_imports_tools_or_views():
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in ("tools", "views", "app") or rel.name in ("bench.py", "demo.py", "__main__.py"):
            continue  # the layers above: tools, views, the web app, and the bench and demo that show them
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")] + [a.name for a in node.names]
            for name in names:
                assert "tools" not in name.split(".") and "views" not in name.split("."), (rel, name)
