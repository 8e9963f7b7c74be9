from mlxsight.errors import OutOfOrderError  # noqa: F401
