"""A checkpoint's generation settings: ``generation_config.json``, read as transformers reads it.

A plain object (no transformers import): every setting ``generate`` honours is an attribute, ``None``
when the checkpoint leaves it unset, so transformers' defaults apply. ``LanguageModel.generate`` takes
its defaults from here; a call's own keywords win.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# The settings generate() reads (transformers' names). Unset ones are None, as on transformers 5.
SETTINGS = ("max_length", "max_new_tokens", "min_length", "min_new_tokens", "early_stopping", "do_sample",
            "num_beams", "temperature", "top_k", "top_p", "length_penalty", "num_return_sequences",
            "pad_token_id", "bos_token_id", "eos_token_id", "use_cache")
# The settings a config lends a generate call (its total ``max_length`` is not one: mlxsight counts
# new tokens, 20 unless set, as transformers does when no length is set).
LENT = ("max_new_tokens", "min_new_tokens", "early_stopping", "do_sample", "num_beams", "temperature", "top_k",
        "top_p", "length_penalty", "num_return_sequences", "pad_token_id", "eos_token_id")
# What transformers copies from a model's config when the checkpoint has no generation_config.json.
_FROM_MODEL_CONFIG = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")


class GenerationConfig:
    """Generation settings: ``GenerationConfig(num_beams=3)``; unknown keys are kept as attributes."""

    def __init__(self, **values: Any) -> None:
        for name in SETTINGS:
            setattr(self, name, None)
        for name, value in values.items():
            setattr(self, name, value)

    @classmethod
    def from_checkpoint(cls, root: str | Path | None, model_config: dict) -> "GenerationConfig":
        """The checkpoint's ``generation_config.json``, else the token ids of its model config."""
        path = Path(root) / "generation_config.json" if root is not None else None
        if path is not None and path.is_file():
            values = json.loads(path.read_text())
            return cls(**{k: v for k, v in values.items() if not k.startswith("_") and k != "transformers_version"})
        return cls(**{k: model_config[k] for k in _FROM_MODEL_CONFIG if model_config.get(k) is not None})

    def set_values(self) -> dict[str, Any]:
        """The settings that are set (not ``None``)."""
        return {k: v for k, v in vars(self).items() if v is not None}

    to_diff_dict = set_values  # transformers' name for what a checkpoint sets

    def to_dict(self) -> dict[str, Any]:
        """Every setting, unset ones as ``None``."""
        return dict(vars(self))

    def update(self, **values: Any) -> dict[str, Any]:
        """Set the known settings among ``values``; the rest are returned (as transformers' ``update``)."""
        unused = {}
        for name, value in values.items():
            if hasattr(self, name):
                setattr(self, name, value)
            else:
                unused[name] = value
        return unused

    def __repr__(self) -> str:
        return f"GenerationConfig({json.dumps(self.set_values(), indent=2, default=str)})"


def resolve(call: dict[str, Any], *configs: Any) -> dict[str, Any]:
    """A generate call's settings: its own keywords, then each config's set values in turn (a
    ``generation_config=`` passed to the call, then the model's), as transformers merges them."""
    settings = dict(call)
    for config in configs:
        if config is None:
            continue
        for name in LENT:
            value = getattr(config, name, None)
            if value is not None and name not in settings:
                settings[name] = value
    return settings
