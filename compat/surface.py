"""nnsight 0.8.1's public import surface, read from the installed package.

``python -m compat.surface`` rewrites ``shim/nnsight/surface.json``: every module of the installed
nnsight and the public names it defines or re-exports. The shim serves that surface: each name is
either provided by mlxsight or fails, on use, with an error naming the feature
(``shim/nnsight/_surface.py``).
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import sys
import types

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shim", "nnsight", "surface.json")
# Optional back ends nnsight ships that need packages (vllm, a C compiler) this surface does not read.
UNREAD = ("nnsight._c", "nnsight.modeling.vllm")


def public_names(module: types.ModuleType) -> list[str]:
    """Names a user may import from ``module``: its own classes/functions/constants, its re-exports
    of nnsight objects, and anything in ``__all__``."""
    listed = set(getattr(module, "__all__", ()))
    out = []
    for name, value in vars(module).items():
        if name.startswith("_") or name == "TYPE_CHECKING" or isinstance(value, types.ModuleType):
            continue
        owner = getattr(value, "__module__", None) if callable(value) or isinstance(value, type) else None
        if name in listed or (owner or "").startswith("nnsight") or (not callable(value) and name.isupper()):
            out.append(name)
    return sorted(out)


def read_surface() -> dict[str, list[str]]:
    """``{module: [public names]}`` of the installed nnsight (import mlx before calling)."""
    import nnsight

    surface = {"nnsight": public_names(nnsight) + sorted(getattr(nnsight, "_LAZY_IMPORTS", {}))}
    for info in pkgutil.walk_packages(nnsight.__path__, "nnsight."):
        if info.name.startswith(UNREAD):
            surface[info.name] = None  # not read: every public name is reported as not provided
            continue
        surface[info.name] = public_names(importlib.import_module(info.name))
    return {"version": nnsight.__version__, "modules": dict(sorted(surface.items()))}


def main(argv: list[str] | None = None) -> int:
    """Rewrite the file; with ``--check``, exit 1 if it differs from the installed nnsight."""
    import mlxsight  # noqa: F401  mlx before nnsight

    surface = read_surface()
    if "--check" in (sys.argv[1:] if argv is None else argv):
        with open(PATH) as f:
            stored = json.load(f)
        if stored != json.loads(json.dumps(surface)):
            print(f"{PATH} differs from the installed nnsight {surface['version']}: run python -m compat.surface")
            return 1
        return 0
    with open(PATH, "w") as f:
        json.dump(surface, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"{PATH}: nnsight {surface['version']}, {len(surface['modules'])} modules, "
          f"{sum(len(v or ()) for v in surface['modules'].values())} names")
    return 0


if __name__ == "__main__":
    sys.exit(main())
