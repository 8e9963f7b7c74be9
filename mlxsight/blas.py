"""Fast matmuls on Linux: load a system OpenBLAS ahead of the reference BLAS that ``mlx[cpu]`` ships.

The Linux CPU wheel of MLX links an auditwheel-bundled netlib reference BLAS (``mlx_cpu.libs/libblas-*.so``),
20-40x slower than OpenBLAS for float32 matmuls. A library loaded earlier with ``RTLD_GLOBAL`` wins the
symbol lookup for ``cblas_sgemm`` and friends, so OpenBLAS has to be loaded *before* ``mlx.core``.

Opt-in only: set ``MLXSIGHT_OPENBLAS=1`` (standard Debian/Ubuntu paths, package ``libopenblas0-pthread``)
or ``MLXSIGHT_OPENBLAS=/path/to/libopenblas.so.0``; ``import mlxsight`` then calls :func:`autoload`.
Nothing here imports mlx. On macOS MLX uses Accelerate and everything here is a no-op.
"""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import os
import sys
import warnings

ENV_VAR = "MLXSIGHT_OPENBLAS"

# Where Debian/Ubuntu's libopenblas0-pthread (and the other variants) put the library.
CANDIDATES = tuple(
    f"/usr/lib/{arch}/{variant}/libopenblas.so.0"
    for arch in ("x86_64-linux-gnu", "aarch64-linux-gnu")
    for variant in ("openblas-pthread", "openblas-openmp", "openblas-serial")
) + ("/usr/lib/x86_64-linux-gnu/libopenblas.so.0", "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
     "/usr/lib64/libopenblas.so.0", "/usr/lib/libopenblas.so.0")

_loaded: str | None = None


def reference_blas() -> str | None:
    """The reference BLAS bundled with the installed ``mlx[cpu]`` wheel, or None (found without importing mlx)."""
    if not sys.platform.startswith("linux"):
        return None
    spec = importlib.util.find_spec("mlx")  # top-level: locates the package without running it
    if spec is None or not spec.submodule_search_locations:
        return None
    site = os.path.dirname(list(spec.submodule_search_locations)[0])
    found = sorted(glob.glob(os.path.join(site, "mlx*.libs", "libblas*.so*")))
    return found[0] if found else None


def find_openblas() -> str | None:
    """The first system OpenBLAS at a standard Debian/Ubuntu path, or None."""
    return next((p for p in CANDIDATES if os.path.exists(p)), None)


def loaded() -> str | None:
    """The OpenBLAS this process loaded through this module, or None."""
    return _loaded


def use_openblas(path: str | None = None) -> str | None:
    """Load OpenBLAS (``path`` or a standard location) globally so MLX's BLAS calls resolve to it.

    Returns the loaded path, or None when nothing was loaded: not Linux, no library found, or
    ``mlx.core`` already imported (then it warns: the reference BLAS is already bound).
    """
    global _loaded
    if not sys.platform.startswith("linux"):
        return None
    if _loaded is not None:
        return _loaded
    if "mlx.core" in sys.modules:
        warnings.warn("mlxsight.blas.use_openblas: mlx.core is already imported, too late to replace its "
                      "BLAS; call it (or set MLXSIGHT_OPENBLAS) before importing mlx", RuntimeWarning, stacklevel=2)
        return None
    path = path or find_openblas()
    if path is None:
        return None
    if not os.path.exists(path):
        raise FileNotFoundError(f"no OpenBLAS at {path}")
    ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    _loaded = path
    return path


def autoload() -> str | None:
    """Honour ``MLXSIGHT_OPENBLAS`` (unset, ``""`` or ``"0"``: do nothing; ``"1"``: standard paths; else a path).

    Called by ``import mlxsight`` before it imports mlx. Warns when opted in but no library is found.
    """
    opt = os.environ.get(ENV_VAR, "").strip()
    if opt in ("", "0") or not sys.platform.startswith("linux"):
        return None
    explicit = None if opt.lower() in ("1", "true", "yes", "on") else opt
    got = use_openblas(explicit)
    if got is None and "mlx.core" not in sys.modules:
        warnings.warn(f"{ENV_VAR} is set but no OpenBLAS was found (apt-get install libopenblas0-pthread)",
                      RuntimeWarning, stacklevel=2)
    return got
