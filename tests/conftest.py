"""Shared test set-up: fast BLAS on Linux, the bundled model, and 'no tests' as a failure."""

import os
import sys

# Tests opt in to the system OpenBLAS (Linux mlx[cpu] ships a reference BLAS); it has to be
# loaded before mlx is imported, which importing mlxsight does.
os.environ.setdefault("MLXSIGHT_OPENBLAS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.dirname(__file__))

import mlx.core as mx  # noqa: E402  (mlx before nnsight/transformers, always)
import pytest  # noqa: E402

import mlxsight  # noqa: E402
from mlxsight import assets  # noqa: E402


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
