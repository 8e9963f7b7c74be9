"""mlxsight: nnsight-compatible tracing for MLX models.

``with model.trace(...)`` records interventions as a graph and runs them in one MLX forward pass.
"""

from . import blas as _blas

_blas.autoload()  # opt-in only (MLXSIGHT_OPENBLAS): must run before mlx is imported

from .errors import (  # noqa: E402
    ExpiredProxyError, MLXSightError, ModuleNotCalledError, NestedTraceError, OutOfOrderError, TraceError,
)
from .model import LanguageModel, NNsight  # noqa: E402
from .proxy import Proxy  # noqa: E402
from .tracer import Tracer, add_exit_listener, apply, save, set_value_transform  # noqa: E402

__all__ = [
    "LanguageModel", "NNsight", "Proxy", "Tracer", "apply", "save", "set_value_transform",
    "add_exit_listener", "MLXSightError", "TraceError", "OutOfOrderError", "ModuleNotCalledError",
    "ExpiredProxyError", "NestedTraceError",
]
