from mlxsight.envoy import Envoy  # noqa: F401

from .eproperty import eproperty  # noqa: F401
from .._surface import missing

__getattr__ = missing(__name__)
