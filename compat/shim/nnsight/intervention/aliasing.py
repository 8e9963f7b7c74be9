"""``nnsight.intervention.aliasing``: the path matching ``rename=`` and ``envoys=`` keys use.

``path_ends_with(path, key)`` is the same rule mlxsight selects custom envoys by; the rest of the
module (nnsight's alias binding internals) fails naming the feature.
"""

from mlxsight.envoy import path_ends_with  # noqa: F401

from .._surface import missing

__getattr__ = missing(__name__)
