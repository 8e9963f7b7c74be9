"""Shared test set-up: fast BLAS on Linux, the bundled model, and 'no tests' as a failure."""

import glob
import os
import sys

# The tests opt in to the system OpenBLAS where it is installed (Linux mlx[cpu] ships a slow
# reference BLAS). It must load before mlx, so mlxsight is imported first; subprocesses inherit it.
if "MLXSIGHT_OPENBLAS" not in os.environ and glob.glob("/usr/lib/*-linux-gnu/openblas-*/libopenblas.so.0"):
    os.environ["MLXSIGHT_OPENBLAS"] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.dirname(__file__))

import mlxsight  # noqa: E402  first: loads OpenBLAS (opt-in above), then mlx
import mlx.core as mx  # noqa: E402,F401  (mlx before nnsight/transformers, always)
import pytest  # noqa: E402

from mlxsight import assets  # noqa: E402


def pytest_collection_modifyitems(config, items):
    tiers = {"smollm2": "opt-in SmolLM2 tier: set MLXSIGHT_SMOLLM2=1", "slow": "long version: set MLXSIGHT_SLOW=1",
             "full": "the default run keeps a representative part of this family: set MLXSIGHT_FULL=1 for all of it"}
    for marker, reason in tiers.items():
        if os.environ.get(f"MLXSIGHT_{marker.upper()}") == "1":
            continue
        for item in items:
            if marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def smollm2_path():
    if os.environ.get("MLXSIGHT_SMOLLM2") != "1":
        pytest.skip("set MLXSIGHT_SMOLLM2=1")
    return assets.smollm2_path(build=True)


def pytest_sessionfinish(session, exitstatus):
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED  # a run that tests nothing must fail


@pytest.fixture(scope="session")
def stories_path():
    return assets.path("stories260k")


@pytest.fixture(scope="session")
def stories(stories_path):
    """The bundled stories260K model with mlx-lm's own module tree."""
    return mlxsight.LanguageModel(stories_path, view="mlx")


@pytest.fixture(scope="session")
def prompt():
    return "Once upon a time, there was a little girl named Lily."
