"""nnsight's import surface, served by mlxsight (``python -m compat run --backend mlx``).

Only ``compat`` puts this directory on ``sys.path``, so that ``import nnsight`` in an unmodified
script resolves here. Anything mlxsight does not provide fails naming the feature.
"""

import warnings

import mlxsight
from mlxsight import NNsight, Proxy, apply, save  # noqa: F401
from mlxsight.envoy import Envoy  # noqa: F401
from mlxsight.errors import OutOfOrderError  # noqa: F401

from .schema.config import CONFIG  # noqa: F401

__version__ = "0.8.1+mlxsight"
BACKEND = "mlx"  # lets a script (or a test) tell the shim from the real package


LanguageModel = mlxsight.LanguageModel


class NNsightDeprecationWarning(FutureWarning):
    """nnsight's deprecation warning class, for scripts that filter it."""


class Object:
    """``nnsight.Object``: a type hint for values read inside a trace (no behaviour)."""


def _remote_only(name: str):
    def helper(*args, **kwargs):
        raise NotImplementedError(
            f"nnsight.{name}() talks to NDIF; on the mlx backend there is no remote service. "
            "Run the script with `python -m compat run --backend nnsight SCRIPT`.")
    helper.__name__ = name
    return helper


status = _remote_only("status")
ndif_status = _remote_only("ndif_status")
is_model_running = _remote_only("is_model_running")
login = _remote_only("login")
whoami = _remote_only("whoami")
compare = _remote_only("compare")


def register(module):
    """``nnsight.register``: ships a local module with remote requests; nothing to do locally."""
    warnings.warn("nnsight.register() has no effect on the mlx backend (nothing is sent remotely)")
    return module


def __getattr__(name):
    raise AttributeError(
        f"nnsight.{name} is not provided by mlxsight's nnsight surface (compat --backend mlx); "
        "run the script with `--backend nnsight`, or ask for it to be added")
