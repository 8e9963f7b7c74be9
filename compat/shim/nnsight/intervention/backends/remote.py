class RemoteError(Exception):
    """nnsight's NDIF job failure; never raised on the mlx backend (there are no remote runs)."""
