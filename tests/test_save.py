"""Save semantics of nnsight 0.8: save by object, push by name, aliasing through saved values."""

import os
import subprocess
import sys
import textwrap

import mlx.core as mx
import pytest

import mlxsight
from reference import llama_forward, token_ids

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_only_saved_objects_are_pushed(stories, prompt):
    before = "kept"
    with stories.trace(prompt):
        a = stories.model.layers[0].output.save()
        b = stories.model.layers[1].output  # never saved
        before = stories.model.layers[2].output  # rebinding a pre-existing name, unsaved
        c = stories.model.layers[3].output.save()
        c = 2  # rebinding un-saves: c is a plain value again
        n_layers = len(stories.model.layers)  # a plain Python value, unsaved
        label = mlxsight.save(f"{len(stories.model.layers)} layers")  # saved: pushed
    assert isinstance(a, mx.array)
    assert before == "kept"
    assert label == "5 layers"
    # nnsight's outermost block pushes only saved values: every other name the block bound is gone
    with pytest.raises(UnboundLocalError):
        b  # noqa: B018
    with pytest.raises(UnboundLocalError):
        c  # noqa: B018
    with pytest.raises(UnboundLocalError):
        n_layers  # noqa: B018


def test_inplace_edit_after_save_shows_through_unless_cloned(stories, prompt):
    with stories.trace(prompt):
        out = stories.model.layers[1].output
        alias = out.save()
        view = out[0, -1, :4].save()
        snap = out.clone().save()
        out[:] = 0
    assert float(mx.abs(alias).max()) == 0
    assert float(mx.abs(view).max()) == 0  # a view saved before the edit re-reads its base
    _, outs, _ = llama_forward(stories.mlx_model, token_ids(stories, prompt))
    assert mx.array_equal(snap, outs[1])


def test_view_edits_reach_the_model(stories, prompt):
    """Per-head ablation through a reshaped view, as nnsight scripts write it with torch views."""
    ids = token_ids(stories, prompt)
    T = ids.shape[1]
    with stories.trace(prompt):
        o_in = stories.model.layers[2].self_attn.o_proj.input
        heads = o_in.view(1, T, 8, 8)
        heads[:, :, 3] = 0
        out = stories.output.save()
        seen = stories.model.layers[2].self_attn.o_proj.input.save()
    assert float(mx.abs(seen.reshape(1, T, 8, 8)[:, :, 3]).max()) == 0
    with stories.trace(prompt):
        x = stories.model.layers[2].self_attn.o_proj.input
        mask = mx.ones((1, 1, 64))
        mask[..., 24:32] = 0
        stories.model.layers[2].self_attn.o_proj.input = x * mask
        ref = stories.output.save()
    assert mx.allclose(out, ref, atol=1e-6)


def test_saved_containers_and_preexisting_lists(stories, prompt):
    pre = []
    with stories.trace(prompt):
        inside = mlxsight.save([])
        for i in range(3):
            inside.append(stories.model.layers[i].output[0, -1])
        pre.append(stories.model.layers[4].output[0, -1])
        d = mlxsight.save({"last": stories.model.layers[4].output[0, -1]})
        s = mlxsight.save(7)
    assert len(inside) == 3 and all(isinstance(v, mx.array) for v in inside)
    assert isinstance(pre[0], mx.array) and mx.array_equal(pre[0], d["last"])
    assert s == 7


def test_save_outside_trace_raises():
    with pytest.raises(ValueError, match="outside a trace"):
        mlxsight.save(3)


def _run_script(tmp_path, body: str, stories_path) -> str:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(f"""
        import mlxsight, mlx.core as mx
        model = mlxsight.LanguageModel({str(stories_path)!r}, view="mlx")
    """) + textwrap.dedent(body))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_module_level_and_function_frames(tmp_path, stories_path):
    out = _run_script(tmp_path, """
        with model.trace("Once upon a time"):
            h = model.model.layers[1].output.save()
            tmp = model.model.layers[2].output
        print("module", type(h).__name__, h.shape, "tmp" in globals())

        def inner():
            with model.trace("Once upon a time"):
                g = model.model.layers[1].output.save()
            return g
        g = inner()
        print("function", type(g).__name__, bool(mx.array_equal(g, h)))

        def closure():
            with model.trace("Once upon a time"):
                k = model.model.layers[1].output.save()
            f = lambda: k.shape
            return f()
        print("closure", closure())
    """, stories_path)
    assert "module array (1, 5, 64) False" in out
    assert "function array True" in out
    assert "closure (1, 5, 64)" in out


def test_notebook_cell_namespace(stories, prompt):
    """IPython runs a cell by exec'ing its code in the user namespace, with the source in linecache."""
    import linecache

    cell = textwrap.dedent("""
        with model.trace(prompt):
            h = model.model.layers[0].output.save()
            unsaved = model.model.layers[1].output
            print(h.shape)
    """)
    name = "<ipython-input-7-abc>"
    linecache.cache[name] = (len(cell), None, cell.splitlines(True), name)
    ns = {"model": stories, "prompt": prompt}
    exec(compile(cell, name, "exec"), ns)
    assert isinstance(ns["h"], mx.array) and "unsaved" not in ns
