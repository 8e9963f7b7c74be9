from mlxsight import NNsight  # noqa: F401
