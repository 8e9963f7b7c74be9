"""Notebook display: a notebook executed with nbclient shows the envoy tree, a trace (its saved values
and graph with the user's source lines) and a toolkit result as HTML (outputs carry text/html)."""

from __future__ import annotations

import pytest

nbformat = pytest.importorskip("nbformat", reason="needs nbformat, nbclient and ipykernel (the test extra)")
nbclient = pytest.importorskip("nbclient", reason="needs nbformat, nbclient and ipykernel (the test extra)")
pytest.importorskip("ipykernel", reason="needs nbformat, nbclient and ipykernel (the test extra)")

CELLS = [
    "import mlxsight\nfrom mlxsight import assets, tools\nmodel = mlxsight.LanguageModel(assets.path('stories260k'))\nmodel",
    "with model.trace('Once upon a time') as tracer:\n    hidden = model.model.layers[1].output.save()\ntracer",
    "tracer.graph",
    "tools.logit_lens(model, 'Once upon a time', top_k=3)",
]


def test_notebook_outputs_carry_html(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    nbclient.NotebookClient(nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    html = [next(o["data"]["text/html"] for o in cell.outputs if o.get("output_type") == "execute_result")
            for cell in nb.cells]
    envoy, trace, graph, lens = html
    assert envoy.startswith("<details") and "(lm_head): " in envoy and "(layers): " in envoy
    # the saved value with its shape and dtype, and the user's own line beside the graph's nodes
    assert "<td>hidden</td>" in trace and "[1, 5, 64]" in trace and "float32" in trace
    assert "hidden = model.model.layers[1].output.save()" in graph
    assert lens.startswith("<!DOCTYPE html>") and 'data-view="lens"' in lens
