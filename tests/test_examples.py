"""Every example runs and prints what it promises (so none rots)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = {
    "01_save_residuals.py": "next token: 'She'",
    "02_activation_patching.py": "patch residual into layer 0 at position 14: recovered 100.0%",
    "03_steering.py": "steered: Once upon a time, there was a happy girl named Lily.",
    "04_logit_lens.py": "after layer 4:",
    "05_invokes_batching.py": "(same as alone: True)",
    "06_attribution_patching.py": "largest estimated effect at position 14",
    "07_cache_and_source.py": "attention weights (recomputed from q and k): (1, 8, 16, 16)",
    "tools_logit_lens.py": "after layer 4   : NLL  0.18   'play' 0.59",
    "tools_tuned_lens.py": "reloaded lens equals the trained one: True",
    "tools_attention.py": "attention weights: (5, 8, 21, 21) (layers, heads, query, key); rows sum to 1: True",
    "tools_heads.py": "previous_token   top heads (layer.head score): 3.6 0.89",
    "tools_patching.py": "layer 2: most recovered at position 14 ('Lily'): 98%",
    "tools_attribution.py": "resid correlation with activation patching: 0.99",
    "tools_steering.py": "She was very happy and wanted to show her friends.",
    "tools_sae.py": "spliced forward unchanged: True",
}


def test_every_example_is_listed():
    assert sorted(p.name for p in (ROOT / "examples").glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_has_a_docstring(name):
    import ast

    assert ast.get_docstring(ast.parse((ROOT / "examples" / name).read_text()))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name, monkeypatch, capsys, tmp_path):
    """As ``python examples/NAME``, in this process (one model load, no interpreter start per example:
    the examples also run one after another in one process, as a notebook would run them)."""
    import runpy

    path = ROOT / "examples" / name
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(path)])
    monkeypatch.syspath_prepend(str(path.parent))
    runpy.run_path(str(path), run_name="__main__")
    out = capsys.readouterr().out
    assert EXPECTED[name] in out, out[-2000:]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_imports_mlxsight_before_mlx(name):
    """mlxsight first: it loads OpenBLAS (when opted in) before mlx, and mlx comes before nnsight/torch."""
    import ast

    order = []
    for node in ast.walk(ast.parse((ROOT / "examples" / name).read_text())):
        if isinstance(node, ast.Import):
            order += [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            order.append(node.module.split(".")[0])
    heavy = [m for m in order if m in ("mlxsight", "mlx", "mlx_lm", "nnsight", "torch", "transformers")]
    assert heavy and heavy[0] == "mlxsight", heavy


def test_one_example_runs_as_a_script():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "01_save_residuals.py")], capture_output=True,
                          text=True, timeout=300, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert EXPECTED["01_save_residuals.py"] in done.stdout, done.stdout[-2000:]
    assert "too late" not in done.stderr, done.stderr[-2000:]


@pytest.mark.smollm2
@pytest.mark.skipif(os.environ.get("MLXSIGHT_SMOLLM2") != "1",
                    reason="opt-in SmolLM2-135M tier: set MLXSIGHT_SMOLLM2=1 (builds it into ~/.cache/mlxsight)")
@pytest.mark.parametrize("name, expected", [("01_save_residuals.py", "next token:"), ("04_logit_lens.py", "after layer 29:"),
                                            ("05_invokes_batching.py", "(same as alone: True)")])
def test_example_runs_on_smollm2(name, expected):
    from mlxsight import assets

    checkpoint = assets.smollm2_path(build=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "examples" / name), str(checkpoint)], capture_output=True,
                          text=True, timeout=300, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert expected in done.stdout, done.stdout[-2000:]
