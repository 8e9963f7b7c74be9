"""The SAELens reference environment: its own venv, because SAELens's pins conflict with ours.

    python -m mlxsight.tools.sae_reference_env [PATH]     # build it (about 2 minutes, ~2 GB)

``PATH`` defaults to ``$MLXSIGHT_SAELENS_VENV`` or ``~/.cache/mlxsight/saelens-venv``. The SAE tests
marked ``saelens`` and the SAELens row of ``python -m mlxsight bench`` use it when it exists and
skip (saying so) when it does not. It holds ``sae-lens`` and the CPU wheel of torch, nothing of ours:
mlxsight talks to it only through ``sae_reference.py`` run as a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SAE_LENS = "sae-lens==6.54.12"
TORCH = "torch==2.13.0"  # the CPU wheel; a bare "torch" pulls several GB of CUDA packages on Linux
SCRIPT = Path(__file__).with_name("sae_reference.py")
CONSTRAINTS = Path(__file__).with_name("sae_reference_constraints.txt")  # the versions the tests passed on


def venv_path() -> Path:
    return Path(os.environ.get("MLXSIGHT_SAELENS_VENV", Path.home() / ".cache" / "mlxsight" / "saelens-venv"))


def python() -> Path | None:
    """The SAELens venv's interpreter, or None when it has not been built."""
    exe = venv_path() / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    return exe if exe.exists() else None


def missing_reason() -> str:
    return (f"no SAELens reference venv at {venv_path()}: build it with `python -m mlxsight.tools.sae_reference_env` "
            "(or point MLXSIGHT_SAELENS_VENV at one)")


def run(*args: str, timeout: float = 600) -> dict:
    """Run ``sae_reference.py ARGS`` under the SAELens interpreter; its last stdout line, as JSON."""
    exe = python()
    if exe is None:
        raise FileNotFoundError(missing_reason())
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLXSIGHT_OPENBLAS")}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run([str(exe), str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"sae_reference.py {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def build(path: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    subprocess.run([str(path / "bin" / "pip"), "install", "-q", "-c", str(CONSTRAINTS), SAE_LENS, TORCH], check=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0]) if argv else venv_path()
    build(path)
    print(f"SAELens reference venv ready at {path}"
          + ("" if path == venv_path() else f" (export MLXSIGHT_SAELENS_VENV={path})"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
