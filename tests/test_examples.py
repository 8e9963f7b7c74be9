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
    "03_steering.py": "steered: Once upon a time, there was a happy happy",
    "04_logit_lens.py": "after layer 4:",
    "05_invokes_batching.py": "(same as alone: True)",
    "06_attribution_patching.py": "largest estimated effect at position 14",
    "07_cache_and_source.py": "attention weights (recomputed from q and k): (1, 8, 16, 16)",
    "12_patching_sweep.py": "layer 2: most recovered at position 14 ('▁Lily'): 98%",
    "13_attribution_sweep.py": "resid correlation with activation patching: 0.99",
    "14_steering_tools.py": "She was very happy and wanted to show her friends.",
}


def test_every_example_is_listed():
    assert sorted(p.name for p in (ROOT / "examples").glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_has_a_docstring(name):
    import ast

    assert ast.get_docstring(ast.parse((ROOT / "examples" / name).read_text()))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "examples" / name)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert EXPECTED[name] in done.stdout, done.stdout[-2000:]
    assert "too late" not in done.stderr, done.stderr[-2000:]  # examples import mlxsight before mlx


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
