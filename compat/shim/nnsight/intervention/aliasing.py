"""``nnsight.intervention.aliasing``: the path rules ``rename=`` and ``envoys=`` keys use.

``path_ends_with(path, key)`` and ``spellings(rename, path, module=None)`` are the rules mlxsight
binds aliases and selects custom envoys by (``mlxsight.envoy``); the rest of the module (nnsight's
alias binding internals) fails naming the feature.
"""

from mlxsight.envoy import path_ends_with, spellings  # noqa: F401

from .._surface import missing

__getattr__ = missing(__name__)
