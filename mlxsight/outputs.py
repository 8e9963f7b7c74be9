"""HF-style model output structures for MLX forwards.

transformers returns ``ModelOutput`` objects (``CausalLMOutputWithPast`` ...) whose fields are
reachable as attributes, as keys and by position (non-``None`` fields only). nnsight scripts read
them (``model.output.logits``), so the HF views return the same shape of object here.
"""

from __future__ import annotations

from typing import Any


class ModelOutput(dict):
    """An ordered mapping of named fields, readable as ``out.name``, ``out["name"]`` or ``out[0]``.

    Subclasses declare their fields, in order, in ``_fields``; a field left out is ``None``.
    Positional indexing skips ``None`` fields, as transformers' ``ModelOutput.to_tuple`` does.
    """

    _fields: tuple[str, ...] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        values = dict(zip(self._fields, args))
        values.update(kwargs)
        unknown = set(values) - set(self._fields) if self._fields else set()
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field(s) {sorted(unknown)}")
        # Like transformers: only fields that are set are keys; declared ones read as None.
        super().__init__({f: values[f] for f in (self._fields or values) if values.get(f) is not None})

    def __getattr__(self, name: str) -> Any:
        if name in self:
            return dict.__getitem__(self, name)
        if name in type(self)._fields:
            return None
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, (int, slice)):
            return self.to_tuple()[key]
        return super().__getitem__(key)

    def to_tuple(self) -> tuple:
        return tuple(self.values())

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={_short(v)}" for k, v in self.items())
        return f"{type(self).__name__}({body})"

    def __reduce__(self):
        return (_rebuild, (type(self), dict(self)))


def _rebuild(cls: type, fields: dict) -> ModelOutput:
    return cls(**fields)


def _short(value: Any) -> str:
    shape = getattr(value, "shape", None)
    return f"array{tuple(shape)}" if shape is not None else repr(value)


class BaseModelOutputWithPast(ModelOutput):
    _fields = ("last_hidden_state", "past_key_values", "hidden_states", "attentions")


class CausalLMOutputWithPast(ModelOutput):
    _fields = ("loss", "logits", "past_key_values", "hidden_states", "attentions")
