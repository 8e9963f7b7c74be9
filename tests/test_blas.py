"""MLXSIGHT_OPENBLAS loads a system OpenBLAS before MLX, only when asked (each case in a fresh process)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mlxsight import blas

ROOT = Path(__file__).resolve().parent.parent
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="OpenBLAS loading is Linux-only")
needs_openblas = pytest.mark.skipif(blas.find_openblas() is None,
                                    reason="no system OpenBLAS (apt-get install libopenblas0-pthread)")

# Times a 256x256 float32 matmul loop and reports which BLAS libraries the process mapped.
PROBE = textwrap.dedent("""
    import json, os, time, warnings
    warnings.simplefilter("error")  # opting in must not warn when the library is present
    import mlxsight
    import mlx.core as mx
    a = mx.random.normal((256, 256)); b = mx.random.normal((256, 256)); mx.eval(a, b)
    mx.eval(a @ b)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(10):
            mx.eval(a @ b)
        best = min(best, time.perf_counter() - start)
    maps = open("/proc/self/maps").read()
    target = os.path.realpath(mlxsight.blas.find_openblas())
    print(json.dumps({"seconds": best, "openblas": target in maps, "loaded": mlxsight.blas.loaded()}))
""")


def probe(value):
    env = {k: v for k, v in os.environ.items() if k != blas.ENV_VAR}
    if value is not None:
        env[blas.ENV_VAR] = value
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@linux_only
def test_reference_blas_is_detected():
    found = blas.reference_blas()
    assert found is not None and "libblas" in os.path.basename(found)


@linux_only
@needs_openblas
def test_opt_in_loads_openblas_and_is_faster():
    without, with_ = probe(None), probe("1")
    assert not without["openblas"] and without["loaded"] is None  # never loaded without the opt-in
    assert with_["openblas"] and with_["loaded"] == blas.find_openblas()
    # OpenBLAS is 20-40x faster on an idle machine; the margin leaves room for a busy CI runner.
    assert with_["seconds"] < 0.8 * without["seconds"], (with_, without)


@linux_only
@needs_openblas
def test_explicit_path_and_zero():
    path = os.path.realpath(blas.find_openblas())
    assert probe(path)["loaded"] == path
    assert not probe("0")["openblas"]


@linux_only
def test_too_late_warns_and_does_nothing():
    code = textwrap.dedent("""
        import warnings
        import mlx.core
        from mlxsight import blas
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert blas.use_openblas() is None
        assert any("too late" in str(w.message) for w in caught), caught
        import os
        target = blas.find_openblas()
        assert target is None or os.path.realpath(target) not in open("/proc/self/maps").read()
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(blas.ENV_VAR, None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
