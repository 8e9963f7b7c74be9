"""Run a script as ``python SCRIPT ARGS`` would, on one backend, optionally capturing saved values."""

from __future__ import annotations

import os
import runpy
import sys
import traceback

SHIM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shim")
BACKENDS = ("mlx", "nnsight")


def import_mlx_first() -> None:
    """mlx before anything else: nnsight (or transformers importing mlx lazily) first aborts.

    Importing mlxsight first honours the ``MLXSIGHT_OPENBLAS`` opt-in (Linux: the system OpenBLAS
    in place of the mlx CPU wheel's slow reference BLAS), which must happen before mlx loads.
    """
    import mlxsight  # noqa: F401
    import mlx.core  # noqa: F401


def prepare(backend: str, capture=None) -> None:
    """Import the backend and install the capture hooks, before the script runs."""
    import_mlx_first()
    listener = capture.add_trace if capture is not None else None
    if backend == "nnsight":
        import nnsight  # noqa: F401

        from .hooks import install_nnsight

        if listener is not None:
            install_nnsight(listener)
    elif backend == "mlx":
        sys.path.insert(0, SHIM)
        for name in [m for m in sys.modules if m == "nnsight" or m.startswith("nnsight.")]:
            del sys.modules[name]
        import nnsight

        if os.path.dirname(os.path.dirname(os.path.abspath(nnsight.__file__))) != SHIM:
            raise RuntimeError(f"the nnsight shim did not take precedence: got {nnsight.__file__}")
        from .hooks import install_mlx

        install_mlx(listener)
    else:
        raise ValueError(f"unknown backend {backend!r}; choose from {BACKENDS}")


def run_script(script: str, args: list[str]) -> None:
    """``python SCRIPT ARGS``: ``__main__``, ``sys.argv`` (``[0]`` made absolute by runpy), the
    script's folder first on the path.

    Run by path, not as source text: nnsight 0.8 (and mlxsight's errors) read the ``with``
    block back from the file.
    """
    path = os.path.abspath(script)
    if not os.path.isfile(path):
        raise SystemExit(f"compat: no such script: {script}")
    sys.argv = [script, *args]
    sys.path.insert(0, os.path.dirname(path))
    runpy.run_path(path, run_name="__main__")


def script_traceback(error: BaseException) -> str:
    """The traceback as the script would show it: this runner's and runpy's frames left out."""
    here = os.path.dirname(os.path.abspath(__file__))
    chunks = traceback.TracebackException.from_exception(error).format()
    return "".join(c for c in chunks if not (c.startswith(f'  File "{here}') or 'File "<frozen runpy>"' in c))


def run(backend: str, script: str, args: list[str], capture_path: str | None = None) -> int:
    """Run ``script`` on ``backend``; the exit status ``python SCRIPT`` would have had."""
    capture = None
    if capture_path is not None:
        from .capture import CaptureFile

        capture = CaptureFile(capture_path, backend, os.path.abspath(script))
    try:
        prepare(backend, capture)
        run_script(script, args)
    except SystemExit as exit_:
        code = exit_.code
        status = 0 if code is None else code if isinstance(code, int) else 1
        if capture is not None:
            capture.finish("ok" if status == 0 else "error", None if status == 0 else f"SystemExit({code!r})")
        if not isinstance(code, (int, type(None))):
            print(code, file=sys.stderr)
        return status
    except Exception as error:  # as `python SCRIPT` would: the traceback on stderr, exit status 1
        text = script_traceback(error)
        print(text, file=sys.stderr, end="")
        if capture is not None:
            capture.finish("error", text)
        return 1
    if capture is not None:
        capture.finish("ok")
    return 0
