"""Load a checkpoint as transformers saves it (or as the hub holds it) into mlx-lm, never running
code that came with it.

transformers 5's ``save_pretrained`` nests keys mlx-lm's ``ModelArgs`` read flat (``rope_theta`` in
``rope_parameters``, GPT-2's ``n_ctx``, GPT-NeoX's ``rotary_pct``), and keeps the HF root prefix on
GPT-2's weights (``transformer.h.0...``) plus a tied ``lm_head.weight``. ``load`` fills the flat keys
a config lacks and strips what mlx-lm's ``sanitize`` does not expect; everything else is mlx-lm's own
loading.

A checkpoint can ask for its own Python: mlx-lm's ``model_file`` (an architecture file it would
import) and transformers' ``auto_map`` (model, config or tokenizer classes it would import from the
checkpoint folder, after asking "run custom code? [y/N]" on a terminal). mlxsight never runs or
offers either, whatever ``trust_remote_code`` says: weights are read from safetensors, the
tokenizer is built by transformers' own classes, and a checkpoint that cannot be used without its
code is refused with a ``CheckpointCodeError`` that says so.
"""

from __future__ import annotations

import importlib
import json
import warnings
from pathlib import Path
from typing import Any

import mlx.nn as nn

from .errors import CheckpointCodeError

# Per model_type: the HF root prefix mlx-lm's checkpoints lack, and keys it never loads (tied).
_PREFIXES = {"gpt2": ("transformer.", ("lm_head.weight",))}


def resolve(path_or_repo: str | Path, revision: str | None = None) -> Path:
    """A local folder as is; a hub repo id through the Hugging Face cache (honours HF_HUB_OFFLINE)."""
    path = Path(path_or_repo)
    if path.exists():
        return path
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(path_or_repo), revision=revision,
                                  allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja",
                                                  "*.tiktoken"]))  # never the checkpoint's code


def flat_keys(config: dict) -> dict[str, Any]:
    """The flat keys mlx-lm reads that a transformers-5 config holds nested (only the missing ones)."""
    kind = config.get("model_type", "")
    rp = config.get("rope_parameters") or {}
    if kind == "gpt2":
        found = {"n_ctx": config.get("n_positions", 1024)}
    elif kind == "gpt_neox":
        found = {"rotary_emb_base": rp.get("rope_theta", 10000.0),
                 "rotary_pct": rp.get("partial_rotary_factor", 1.0)}
    elif "full_attention" in rp:  # gemma3: one set of RoPE parameters per attention kind
        found = {"rope_theta": rp["full_attention"]["rope_theta"]}
        if "sliding_attention" in rp:
            found["rope_local_base_freq"] = rp["sliding_attention"]["rope_theta"]
        if "layer_types" in config:
            found["sliding_window_pattern"] = _sliding_pattern(config["layer_types"])
    elif "rope_theta" in rp:
        found = {"rope_theta": rp["rope_theta"]}
        if rp.get("rope_type", "default") != "default":
            found["rope_scaling"] = {**rp, "type": rp["rope_type"]}
        if kind == "phi3":
            found["partial_rotary_factor"] = rp.get("partial_rotary_factor", 1.0)
    else:
        found = {}
    return {k: v for k, v in found.items() if k not in config}


def _sliding_pattern(layer_types: list[str]) -> int:
    for pattern in range(1, len(layer_types) + 1):
        if all((t == "full_attention") == ((i + 1) % pattern == 0) for i, t in enumerate(layer_types)):
            return pattern
    raise ValueError(f"mlx-lm cannot express layer_types={layer_types}")


def _classes(config: dict) -> tuple[Any, type]:
    """mlx-lm's (model factory, args class) for ``config``; the factory's sanitize also strips the
    HF root prefix of a transformers-saved checkpoint."""
    from mlx_lm.utils import MODEL_REMAPPING

    kind = config["model_type"]
    try:
        arch = importlib.import_module(f"mlx_lm.models.{MODEL_REMAPPING.get(kind, kind)}")
    except ImportError as e:
        raise ValueError(f"model type {kind!r} is not supported by mlx-lm") from e
    prefix, dropped = _PREFIXES.get(kind, (None, ()))

    def build(args: Any) -> nn.Module:
        model = arch.Model(args)
        if prefix is None:
            return model
        own = model.sanitize

        def sanitize(weights: dict) -> dict:
            weights = {k.removeprefix(prefix): v for k, v in weights.items() if k not in dropped}
            return own(weights)

        object.__setattr__(model, "sanitize", sanitize)  # this load only: removed after it
        return model

    return build, arch.ModelArgs


def load(path_or_repo: str | Path, revision: str | None = None,
         trust_remote_code: bool | None = None) -> tuple[nn.Module, Any, dict]:
    """``(mlx-lm model, mlx-lm tokenizer wrapper, config.json as saved)``; checkpoint code refused."""
    from mlx_lm.utils import load_model, load_tokenizer

    path = resolve(path_or_repo, revision)
    config = json.loads((path / "config.json").read_text())
    if config.get("model_file") is not None:
        raise CheckpointCodeError(_refusal(path_or_repo, f"its architecture file {config['model_file']!r}",
                                           trust_remote_code))
    try:
        model, _ = load_model(path, model_config=flat_keys(config), get_model_classes=_classes)
    except ValueError as e:
        if config.get("auto_map") and "not supported" in str(e):  # an architecture only its own code defines
            what = f"its model code {config['auto_map']!r} (mlx-lm has no {config.get('model_type')!r} architecture)"
            raise CheckpointCodeError(_refusal(path_or_repo, what, trust_remote_code)) from None
        raise
    vars(model).pop("sanitize", None)
    auto_map = _tokenizer_auto_map(path)
    try:
        # An explicit False makes transformers use its own classes or raise; never prompt, never import.
        tokenizer = load_tokenizer(path, tokenizer_config_extra={"trust_remote_code": False},
                                   eos_token_ids=config.get("eos_token_id"))
    except ValueError as e:
        if "trust_remote_code" not in str(e):
            raise
        what = f"its tokenizer class {auto_map!r}" if auto_map else "code in the checkpoint"
        raise CheckpointCodeError(_refusal(path_or_repo, what, trust_remote_code)) from None
    if auto_map:
        name = type(getattr(tokenizer, "_tokenizer", tokenizer)).__name__
        warnings.warn(f"{path_or_repo}: tokenizer_config.json names custom tokenizer code ({auto_map!r}); mlxsight "
                      f"never runs checkpoint code, so transformers' built-in {name} is used instead", UserWarning,
                      stacklevel=3)
    return model, tokenizer, config


def _refusal(model: Any, what: str, trust_remote_code: bool | None) -> str:
    flag = " (trust_remote_code=True does not change that)" if trust_remote_code else ""
    return (f"{model} needs {what} to load, and mlxsight never runs code from a checkpoint{flag}. Use a "
            f"checkpoint whose architecture mlx-lm implements, or build the model and tokenizer yourself and "
            f"wrap them: LanguageModel(module, tokenizer=tokenizer)")


def _tokenizer_auto_map(root: Path) -> Any:
    auto_map = _read_json(root / "tokenizer_config.json").get("auto_map")
    if isinstance(auto_map, dict):
        return auto_map.get("AutoTokenizer")
    return auto_map


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
