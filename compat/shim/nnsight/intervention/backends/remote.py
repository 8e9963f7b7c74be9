from ..._surface import missing


class RemoteError(Exception):
    """nnsight's NDIF job failure; never raised on the mlx backend (there are no remote runs)."""


__getattr__ = missing(__name__)
