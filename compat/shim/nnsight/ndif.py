"""``nnsight.ndif``: NDIF service helpers. There is no remote service on the mlx backend."""

from ._surface import missing
from .schema.config import CONFIG  # noqa: F401


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
get_remote_env = _remote_only("get_remote_env")


def register(module):
    """``nnsight.register``: ships a local module with remote requests; nothing is sent from the mlx
    backend, so there is nothing to do."""
    return module


__getattr__ = missing(__name__)
