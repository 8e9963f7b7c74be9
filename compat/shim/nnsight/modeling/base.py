from mlxsight import NNsight  # noqa: F401

from .._surface import missing

__getattr__ = missing(__name__)
