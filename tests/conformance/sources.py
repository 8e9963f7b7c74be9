"""The published packages whose tests are the conformance bar, fetched at test time.

Nothing here is copied into the repository: ``pip download`` writes into the cache
(``$MLXSIGHT_CACHE/conformance`` or ``~/.cache/mlxsight/conformance``) and the archives are unpacked
there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

NNSIGHT = "nnsight==0.8.1"
NNTERP = "nnterp==1.3.0"


def cache_dir() -> Path:
    root = Path(os.environ.get("MLXSIGHT_CACHE") or Path.home() / ".cache" / "mlxsight")
    return root / "conformance"


def _download(requirement: str, extra: list[str]) -> Path:
    """The archive ``pip download`` gives for ``requirement`` (downloaded once)."""
    dl = cache_dir() / "dl"
    dl.mkdir(parents=True, exist_ok=True)
    name, _, version = requirement.partition("==")
    found = sorted(dl.glob(f"{name}-{version}*"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", requirement, "--no-deps", "-q", "-d", str(dl),
                        *extra], check=True, timeout=600)
        found = sorted(dl.glob(f"{name}-{version}*"))
    if not found:
        raise FileNotFoundError(f"pip download {requirement} produced no archive in {dl}")
    return found[0]


def nnsight_tests() -> Path:
    """nnsight 0.8.1's sdist, unpacked: the folder holding its ``tests/``."""
    archive = _download(NNSIGHT, ["--no-binary", ":all:"])
    root = cache_dir() / archive.name.removesuffix(".tar.gz")
    if not (root / "tests" / "conftest.py").exists():
        with tarfile.open(archive) as tar:
            tar.extractall(cache_dir(), filter="data")
    return root


def nnterp_package() -> Path:
    """nnterp 1.3.0 unpacked (its wheel carries ``nnterp/tests``): the folder holding ``nnterp/``."""
    archive = _download(NNTERP, [])
    root = cache_dir() / "nnterp-1.3.0"
    if not (root / "nnterp" / "tests" / "conftest.py").exists():
        if archive.suffix == ".whl":
            with zipfile.ZipFile(archive) as whl:
                whl.extractall(root)
        else:
            with tarfile.open(archive) as tar:
                tar.extractall(cache_dir(), filter="data")
    # nnterp's tests keep a model-status file in the package `nnterp.data`, which neither its wheel
    # nor its sdist ships: create the (empty) package, as a checkout of its repository has it.
    data = root / "nnterp" / "data"
    data.mkdir(exist_ok=True)
    (data / "__init__.py").touch()
    return root
