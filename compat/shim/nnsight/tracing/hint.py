"""``nnsight.tracing.hint.Object``: the type hint for values read inside a trace."""

from .._surface import missing


class Object:
    """A value read inside a trace (a type hint only; no behaviour)."""


__getattr__ = missing(__name__)
