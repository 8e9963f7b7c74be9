"""One side of ``conformance.docs``: a page's blocks run in order, in one namespace, on one backend.

Each block is compiled from its own file (so nnsight, and mlxsight's errors, read the ``with``
block back from it) and executed in the namespace the earlier blocks left, as notebook cells are.
A block that raises is recorded (exception class and message) and the next block still runs.
"""

from __future__ import annotations

import argparse
import builtins
import json
import random
import sys
import traceback
from pathlib import Path


def seed() -> None:
    import numpy as np
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--backend", choices=("mlx", "nnsight"), required=True)
    p.add_argument("--folder", required=True)
    p.add_argument("--out", required=True)
    ns = p.parse_args(argv)
    folder = Path(ns.folder)

    from compat.capture import CaptureFile
    from compat.runner import prepare

    capture = CaptureFile(str(folder / f"{ns.backend}.pkl"), ns.backend, str(folder))
    prepare(ns.backend, capture)
    if ns.backend == "nnsight":
        from .environment import adapt_nnsight

        adapt_nnsight()
    seed()
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    blocks = []
    for path in sorted(folder.glob("block*.py")):
        namespace["__file__"] = str(path)
        sys.argv = [str(path)]
        print(f"=== {path.name}", flush=True)
        try:
            exec(compile(path.read_text(), str(path), "exec"), namespace)
            blocks.append({"status": "ok", "error": ""})
        except KeyboardInterrupt:
            raise
        except BaseException as error:  # SystemExit included: a block is a cell, not a program
            text = "".join(traceback.format_exception_only(type(error), error)).strip()
            traceback.print_exc()
            blocks.append({"status": "error", "type": type(error).__name__, "error": text.splitlines()[-1]
                           if text else type(error).__name__})
        Path(ns.out).write_text(json.dumps({"blocks": blocks}))
    capture.finish("ok")
    Path(ns.out).write_text(json.dumps({"blocks": blocks}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
