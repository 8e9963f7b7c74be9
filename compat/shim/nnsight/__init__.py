"""nnsight's import surface, served by mlxsight (``python -m compat run --backend mlx``).

Only ``compat`` puts this directory on ``sys.path``, so that ``import nnsight`` in an unmodified
script resolves here. Every module and public name of nnsight 0.8.1 (``surface.json``) imports;
what mlxsight does not provide fails, on use, naming the feature (``_surface.py``).
"""

import functools
import warnings

from . import _surface

_surface.install()

from mlxsight import NNsight, Proxy, apply  # noqa: E402,F401
from mlxsight.envoy import Envoy  # noqa: E402,F401
from mlxsight.errors import NNsightDeprecationWarning, OutOfOrderError  # noqa: E402,F401

from .ndif import compare, is_model_running, login, ndif_status, register, status, whoami  # noqa: E402,F401
from .schema.config import CONFIG  # noqa: E402,F401
from .tracing.hint import Object  # noqa: E402,F401

__version__ = "0.8.1+mlxsight"
BACKEND = "mlx"  # lets a script (or a test) tell the shim from the real package


def deprecated(message: str):
    """nnsight's decorator: warn ``NNsightDeprecationWarning`` when the wrapped callable is used."""

    def decorator(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            warnings.warn(message, NNsightDeprecationWarning, stacklevel=2)
            return func(*args, **kwargs)

        return wrapper

    return decorator


from .modeling.transformers import LanguageModel, TransformersModel  # noqa: E402,F401
from .intervention.backward import save  # noqa: E402,F401 - `with t.backward():` on torch tensors too

if CONFIG.APP.PYMOUNT:
    # As nnsight does: torch, transformers and anyio first, so that no class they define (torch's C
    # bindings, anyio's annotated attribute sets) sees `save` already on object.
    import torch  # noqa: F401
    import transformers  # noqa: F401

    try:
        import anyio  # noqa: F401
    except ImportError:
        pass
    from ._mount import mount

    mount(save, "save")

__getattr__ = _surface.missing(__name__)
