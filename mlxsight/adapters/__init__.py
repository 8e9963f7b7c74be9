"""HF-transformers views of mlx-lm models: transformers' module tree, call signatures and outputs.

``hf_view(mlx_model, config)`` returns an ``nn.Module`` whose ``named_modules()`` are transformers'
(``model.layers.0.self_attn.q_proj``, ``transformer.h.0.attn.c_attn``, ...), built around the mlx-lm
model's own submodules (no copies), or ``None`` when ``config["model_type"]`` has no adapter.
"""

from __future__ import annotations

import importlib

import mlx.nn as nn

# model_type -> adapter module (one flat file per architecture family, as mlx-lm does).
_ADAPTERS = {
    "llama": "llama", "mistral": "llama", "qwen2": "llama", "qwen3": "llama",
    "gpt2": "gpt2",
    "gemma2": "gemma", "gemma3_text": "gemma",
    "phi3": "phi3",
    "gpt_neox": "gpt_neox",
    "olmo2": "olmo2",
}


def supported_architectures() -> list[str]:
    """The ``model_type`` values that have an HF view."""
    return sorted(_ADAPTERS)


def hf_view(mlx_model: nn.Module, config: dict) -> nn.Module | None:
    name = _ADAPTERS.get(config.get("model_type", ""))
    if name is None:
        return None
    try:
        adapter = importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as e:  # family not written yet
        if e.name == f"{__name__}.{name}":
            return None
        raise
    return adapter.hf_view(mlx_model, config)
