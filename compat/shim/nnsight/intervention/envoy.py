from mlxsight.envoy import Envoy  # noqa: F401
