from mlxsight import save  # noqa: F401
