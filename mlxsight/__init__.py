"""mlxsight: nnsight-compatible tracing for MLX models.

``with model.trace(...)`` records interventions as a graph and runs them in one MLX forward pass.
"""

from . import blas as _blas

_blas.autoload()  # opt-in only (MLXSIGHT_OPENBLAS): must run before mlx is imported

from .errors import (  # noqa: E402
    CheckpointCodeError, ExpiredProxyError, IndexOutOfRangeError, MLXSightError, ModuleNotCalledError,
    NestedTraceError, OutOfOrderError, TraceError,
)
from .model import LanguageModel, NNsight  # noqa: E402
from . import attention  # noqa: E402
from .context import (  # noqa: E402
    add_exit_listener, remove_exit_listener, save, set_relaxed_order, set_torch_semantics, set_value_transform,
)
from .proxy import Proxy, apply  # noqa: E402
from .tracer import Tracer  # noqa: E402

__all__ = [
    "LanguageModel", "NNsight", "Proxy", "Tracer", "attention", "apply", "save", "set_value_transform", "set_torch_semantics",
    "set_relaxed_order",
    "add_exit_listener", "remove_exit_listener", "MLXSightError", "TraceError", "OutOfOrderError", "ModuleNotCalledError",
    "ExpiredProxyError", "NestedTraceError", "IndexOutOfRangeError", "CheckpointCodeError",
]
