"""The compat command line: run, crosscheck, compare and check-remote on real nnsight scripts.

Every command runs as a subprocess (``python -m compat ...``), as users run it: the nnsight and
mlx backends cannot share a process. References are independent of compat: transformers' own
forward (with torch forward hooks) for captured values, numpy for the comparison rules.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mlxsight
from tiny_models import cached_checkpoint

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = Path(__file__).resolve().parent / "compat_scripts"
sys.path.insert(0, str(ROOT))

from compat.capture import Leaf, flatten  # noqa: E402
from compat.compare import ATOL, RTOL, compare, compare_leaves  # noqa: E402

needs_core = pytest.mark.skipif(not hasattr(mlxsight, "LanguageModel"),
                                reason="mlxsight.LanguageModel (the core) is not there yet")


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.run([sys.executable, "-m", "compat", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def ckpt():
    """A tiny random Llama (untied lm_head) that both transformers and mlx-lm load."""
    return cached_checkpoint("llama")


@pytest.fixture(scope="module")
def residual_capture(ckpt, tmp_path_factory):
    """``save_residual.py`` run on real nnsight with its saved values captured."""
    path = tmp_path_factory.mktemp("capture") / "nnsight.pkl"
    ok(cli("run", "--backend", "nnsight", "--capture", path, SCRIPTS / "save_residual.py", ckpt))
    with open(path, "rb") as f:
        return path, pickle.load(f)


# -- run ---------------------------------------------------------------------------------------

def test_run_nnsight_captures_what_transformers_computes(ckpt, residual_capture):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, record = residual_capture
    assert record["backend"] == "nnsight" and record["status"] == "ok"
    (trace,) = record["traces"]
    assert trace["file"].endswith("save_residual.py") and trace["line"] == 12  # the `with` line
    values = trace["values"]

    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()
    seen = {}
    hooks = [m.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o))
             for name, m in [*((f"hidden[{i}]", l) for i, l in enumerate(model.model.layers)),
                             ("normed", model.model.norm), ("logits", model.lm_head)]]
    ids = AutoTokenizer.from_pretrained(ckpt)("Once upon a time, Lily saw a red ball", return_tensors="pt")
    with torch.no_grad():
        model(**ids)
    for h in hooks:
        h.remove()
    assert sorted(values) == sorted(seen)
    for name, expected in seen.items():
        expected = (expected[0] if isinstance(expected, tuple) else expected).double().numpy()
        assert values[name].kind == "array" and values[name].dtype == "float32"
        # same torch, but nnsight may pick another attention kernel and thread split: fp32 rounding only
        np.testing.assert_allclose(values[name].data, expected, rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("backend", ["nnsight", pytest.param("mlx", marks=needs_core)])
def test_run_is_like_python_script(backend):
    proc = ok(cli("run", "--backend", backend, SCRIPTS / "argv_probe.py", "a", "--flag", "b"))
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["argv"][1:] == ["a", "--flag", "b"] and seen["argv"][0].endswith("argv_probe.py")
    assert seen["name"] == "__main__"
    assert seen["path0"] == str(SCRIPTS)
    assert seen["sibling"] == "sibling"
    shim = str(ROOT / "compat" / "shim" / "nnsight" / "__init__.py")
    assert (seen["nnsight"] == shim) == (backend == "mlx")


def test_run_reports_the_scripts_own_traceback(ckpt):
    proc = cli("run", "--backend", "nnsight", SCRIPTS / "crash.py", ckpt)
    assert proc.returncode == 1
    assert "RuntimeError: deliberate failure after the trace" in proc.stderr
    assert "compat/runner.py" not in proc.stderr


# -- crosscheck / compare ----------------------------------------------------------------------

def test_crosscheck_nnsight_against_itself_matches(ckpt, tmp_path):
    out = tmp_path / "table.json"
    proc = ok(cli("crosscheck", SCRIPTS / "patch_ablate.py", ckpt, "--backends", "nnsight,nnsight",
                  "--json", out))
    table = json.loads(out.read_text())
    names = [row["name"].split()[-1] for row in table["rows"]]
    assert sorted(names) == ["ablated", "clean_h", "clean_logits", "patched_logits"]
    assert table["passed"] and all(row["verdict"] == "ok" and row["abs_diff"] == 0 for row in table["rows"])
    assert "PASS" in proc.stdout and "patched_logits" in proc.stdout


def test_compare_names_a_perturbed_value(residual_capture, tmp_path):
    path, record = residual_capture
    assert ok(cli("compare", path, path)).stdout.strip().endswith("PASS")
    perturbed = pickle.loads(pickle.dumps(record))
    values = perturbed["traces"][0]["values"]
    values["hidden[2]"].data = values["hidden[2]"].data.copy()
    values["hidden[2]"].data[0, 3, 5] += 1e-2
    del values["normed"]
    bad = tmp_path / "perturbed.pkl"
    bad.write_bytes(pickle.dumps(perturbed))
    proc = cli("compare", bad, path)
    assert proc.returncode == 1, proc.stdout
    lines = {line.split()[2]: line for line in proc.stdout.splitlines() if line.startswith("#0 ")}
    assert "MISMATCH at [0,3,5] (1/704 off)" in lines["hidden[2]"] and "0.01" in lines["hidden[2]"]
    assert lines["normed"].rstrip().endswith("MISSING in test")
    assert lines["hidden[1]"].rstrip().endswith("ok")
    assert proc.stdout.strip().endswith("FAIL")


def test_crosscheck_fails_and_shows_the_traceback_of_a_crashing_side(ckpt):
    proc = cli("crosscheck", SCRIPTS / "crash.py", ckpt, "--backends", "nnsight,nnsight")
    assert proc.returncode == 1
    assert "RuntimeError: deliberate failure after the trace" in proc.stdout
    assert "did not run cleanly" in proc.stdout


def _leaf(x) -> Leaf:
    return Leaf("array", "float32", np.shape(x), np.asarray(x, dtype=np.float64))


def test_default_tolerances_catch_real_bugs_and_pass_fp32_noise():
    rng = np.random.default_rng(0)
    h = rng.standard_normal((2, 7, 64)).astype(np.float32)
    fp32_noise = h * (1 + rng.uniform(-2e-6, 2e-6, h.shape).astype(np.float32))
    assert compare_leaves(_leaf(fp32_noise), _leaf(h), RTOL, ATOL).verdict == "ok"

    def rms(x):
        return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-6)

    def layer_norm(x):
        return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)

    x = rng.standard_normal((2, 7, 64)) + 0.3  # activations are rarely mean-free
    assert compare_leaves(_leaf(layer_norm(x)), _leaf(rms(x)), RTOL, ATOL).mismatch
    shifted = np.concatenate([h[:, :1], h[:, :-1]], axis=1)  # off by one position
    assert compare_leaves(_leaf(shifted), _leaf(h), RTOL, ATOL).mismatch
    assert compare_leaves(_leaf(h[:, :-1]), _leaf(h), RTOL, ATOL).verdict == "SHAPE"


def test_flatten_and_compare_non_tensor_values():
    import torch

    out: dict = {}
    flatten("v", {"a": [torch.ones(2), 3], "b": (1.5, "x"), "c": object()}, out)
    assert sorted(out) == ["v['a'][0]", "v['a'][1]", "v['b'][0]", "v['b'][1]", "v['c']"]
    assert out["v['a'][0]"].kind == "array" and out["v['c']"].kind == "opaque"
    ref = {"traces": [{"ordinal": 0, "file": "s.py", "line": 3, "values": out}]}
    changed = dict(out, **{"v['b'][1]": Leaf("value", "str", (), "y")})
    changed.pop("v['c']")  # an opaque object on one side only is listed, not failed
    rows = compare({"traces": [{**ref["traces"][0], "values": changed}]}, ref)
    verdicts = {r.name.split()[-1]: r.verdict for r in rows}
    assert verdicts == {"v['a'][0]": "ok", "v['a'][1]": "ok", "v['b'][0]": "ok", "v['b'][1]": "MISMATCH",
                        "v['c']": "unchecked"}


# -- check-remote ------------------------------------------------------------------------------

def test_check_remote_serializes_a_simple_script(ckpt):
    proc = ok(cli("check-remote", SCRIPTS / "steer_remote.py", ckpt, "remote"))
    assert "trace #0" in proc.stdout and ": serializable" in proc.stdout
    assert "1/1 traces serializable for NDIF (nothing was sent)" in proc.stdout
    assert "names shipped: model" in proc.stdout
    assert "steered logits norm:" in proc.stdout  # the trace still ran (locally)
    payload = next(line for line in proc.stdout.splitlines() if "payload:" in line)
    assert int(payload.split()[1].replace(",", "")) > 1000


def test_check_remote_reports_what_cannot_be_shipped(ckpt):
    proc = cli("check-remote", SCRIPTS / "remote_unserializable.py", ckpt)
    assert proc.returncode == 1
    assert "NOT serializable" in proc.stdout and "cannot pickle 'generator' object" in proc.stdout
    assert "0/1 traces serializable" in proc.stdout


# -- the mlx backend ---------------------------------------------------------------------------

def test_to_torch_converts_once_and_keeps_aliases():
    import mlx.core as mx
    import torch

    from compat.hooks import to_torch

    a = mx.arange(6, dtype=mx.float32).reshape(2, 3)
    inner = [a, mx.array([1, 2], dtype=mx.bfloat16)]
    value = {"x": inner, "y": (a, 3), "z": inner}
    out = to_torch(value)
    assert out is value and out["x"] is inner and out["z"] is inner  # in place, aliases kept
    assert isinstance(out["x"][0], torch.Tensor) and out["x"][0] is out["y"][0]
    assert out["x"][1].dtype == torch.bfloat16 and out["x"][1].tolist() == [1.0, 2.0]
    assert torch.equal(out["x"][0], torch.arange(6, dtype=torch.float32).reshape(2, 3))


@needs_core
@pytest.mark.parametrize("script", ["save_residual", "patch_ablate",  # the parity tours cover the others too
                                    *(pytest.param(s, marks=pytest.mark.full)
                                      for s in ("logit_lens", "steer_remote", "generate_session"))])
def test_crosscheck_mlx_against_nnsight(ckpt, script, tmp_path):
    out = tmp_path / "table.json"
    proc = ok(cli("crosscheck", SCRIPTS / f"{script}.py", ckpt, "--json", out))
    table = json.loads(out.read_text())
    assert table["passed"] and table["ran_ok"] == [True, True] and table["rows"]
    assert all(row["verdict"] == "ok" for row in table["rows"]), proc.stdout


@needs_core
def test_mlx_backend_refuses_remote_naming_the_nnsight_backend(ckpt):
    proc = cli("run", "--backend", "mlx", SCRIPTS / "steer_remote.py", ckpt, "remote")
    assert proc.returncode == 1
    assert "remote" in proc.stderr and "--backend nnsight" in proc.stderr


@needs_core
def test_crosscheck_hf_structures(ckpt, tmp_path):
    """The root ModelOutput (.logits), attention's (attn_output, None) tuple, a saved torch.Size."""
    out = tmp_path / "table.json"
    ok(cli("crosscheck", SCRIPTS / "hf_structures.py", ckpt, "--json", out))
    verdicts = {row["name"].split()[-1]: row["verdict"] for row in json.loads(out.read_text())["rows"]}
    assert verdicts == {"out['logits']": "ok", "out['past_key_values']": "unchecked", "attn_out": "ok",
                        "shape[0]": "ok", "shape[1]": "ok", "shape[2]": "ok"}


@needs_core
def test_crosscheck_padded_batch(ckpt, tmp_path):
    """Left-padded batch: every value matches, real tokens and pad positions alike."""
    out = tmp_path / "table.json"
    cli("crosscheck", SCRIPTS / "padded_batch.py", ckpt, "--json", out)
    table = json.loads(out.read_text())
    verdicts = {row["name"].split()[-1]: row["verdict"] for row in table["rows"]}
    assert table["ran_ok"] == [True, True]
    assert verdicts["last"] == "ok" and verdicts["last_h"] == "ok"
    assert verdicts["full"] == "ok"  # pad positions too: pad query rows follow torch's sdpa


@needs_core
def test_crosscheck_torch_ops(ckpt):
    ok(cli("crosscheck", SCRIPTS / "torch_ops.py", ckpt))
