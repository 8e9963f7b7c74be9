"""Parity with nnsight, architecture by architecture: one real nnsight script (residuals, internals,
patching, ablation, steering, logit lens, batched invokes) crosschecked value by value."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlxsight import assets
from tiny_models import ARCHS, cached_checkpoint

ROOT = Path(__file__).resolve().parent.parent
TOUR = Path(__file__).resolve().parent / "parity" / "architecture_tour.py"


def crosscheck(script: Path, checkpoint: Path, tmp_path: Path) -> dict:
    table = tmp_path / "table.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run([sys.executable, "-m", "compat", "crosscheck", str(script), str(checkpoint),
                           "--json", str(table)], capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    return json.loads(table.read_text())


# The default run crosschecks the bundled Llama and the families whose layouts differ most (soft-capping,
# GPT-2's Conv1D, GPT-NeoX's parallel residual, Qwen3's q/k norms); MLXSIGHT_FULL=1 runs every family.
# Every family's logits are compared with transformers' in the default run too (test_tiny_models.py).
REPRESENTATIVE = {"stories260k", "gemma2", "gpt2", "gpt_neox", "qwen3"}


@pytest.mark.parametrize("arch", [a if a in REPRESENTATIVE else pytest.param(a, marks=pytest.mark.full)
                                  for a in [*ARCHS, "stories260k"]])
def test_architecture_tour_matches_nnsight(arch, tmp_path):
    checkpoint = assets.path("stories260k") if arch == "stories260k" else cached_checkpoint(arch)
    table = crosscheck(TOUR, checkpoint, tmp_path)
    rows = table["rows"]
    assert len(rows) >= 21 and all(row["verdict"] == "ok" for row in rows), rows


FEATURES = Path(__file__).resolve().parent / "parity" / "features_tour.py"


@pytest.mark.parametrize("which", [pytest.param("llama", marks=pytest.mark.full), "stories260k"])
def test_features_tour_matches_nnsight(which, tmp_path):
    """Generation with per-step edits, gradients, cache, skip, stop, edit, session, scan, .source."""
    checkpoint = assets.path("stories260k") if which == "stories260k" else cached_checkpoint(which)
    table = crosscheck(FEATURES, checkpoint, tmp_path)
    compared = [row for row in table["rows"] if row["verdict"] != "unchecked"]
    assert len(compared) >= 20 and all(row["verdict"] == "ok" for row in compared), compared
    names = {row["name"].split()[-1] for row in compared}
    assert {"generated", "grad", "edited_logits", "session_logits", "act", "cached_layer1"} <= names
