"""(placeholder by the lead; helper A owns this file and replaces it)"""
import ctypes, os, sys


def autoload():
    opt = os.environ.get("MLXSIGHT_OPENBLAS")
    if not opt or opt == "0" or not sys.platform.startswith("linux") or "mlx.core" in sys.modules:
        return None
    path = opt if os.path.sep in opt else "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0"
    if os.path.exists(path):
        ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        return path
    return None
