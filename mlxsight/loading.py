"""Loading an mlx-lm checkpoint without ever running code that came with it.

A checkpoint can ask for its own Python: mlx-lm's ``model_file`` (an architecture file it would
import) and transformers' ``auto_map`` (model, config or tokenizer classes it would import from the
checkpoint folder, after asking "run custom code? [y/N]" on a terminal). mlxsight never runs or
offers either, whatever ``trust_remote_code`` says: weights are read from safetensors, the
tokenizer is built by transformers' own classes, and a checkpoint that cannot be used without its
code is refused with a ``CheckpointCodeError`` that says so.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from .errors import CheckpointCodeError


def load_checkpoint(model: str | Path, trust_remote_code: bool | None = None) -> tuple[Any, Any]:
    """``mlx_lm.load(model)`` -> (module, tokenizer wrapper), with all checkpoint code refused."""
    from mlx_lm import load

    root = _local_dir(model)
    config = _read_json(root / "config.json") if root else {}
    if config.get("model_file") is not None:
        raise CheckpointCodeError(_refusal(model, f"its architecture file {config['model_file']!r}",
                                           trust_remote_code))
    auto_map = _tokenizer_auto_map(root) if root else None
    try:
        # An explicit False makes transformers use its own classes or raise; never prompt, never import.
        module, tokenizer = load(str(model), tokenizer_config={"trust_remote_code": False}, trust_remote_code=False)
    except ValueError as e:
        model_code = config.get("auto_map")
        if "trust_remote_code" in str(e):
            what = f"its tokenizer class {auto_map!r}" if auto_map else "code in the checkpoint"
        elif model_code and "not supported" in str(e):  # an architecture only the checkpoint's code defines
            what = f"its model code {model_code!r} (mlx-lm has no {config.get('model_type')!r} architecture)"
        else:
            raise
        raise CheckpointCodeError(_refusal(model, what, trust_remote_code)) from None
    if auto_map:
        name = type(getattr(tokenizer, "_tokenizer", tokenizer)).__name__
        warnings.warn(f"{model}: tokenizer_config.json names custom tokenizer code ({auto_map!r}); mlxsight never "
                      f"runs checkpoint code, so transformers' built-in {name} is used instead", UserWarning,
                      stacklevel=3)
    return module, tokenizer


def _refusal(model: Any, what: str, trust_remote_code: bool | None) -> str:
    flag = " (trust_remote_code=True does not change that)" if trust_remote_code else ""
    return (f"{model} needs {what} to load, and mlxsight never runs code from a checkpoint{flag}. Use a "
            f"checkpoint whose architecture mlx-lm implements, or build the model and tokenizer yourself and "
            f"wrap them: LanguageModel(module, tokenizer=tokenizer)")


def _local_dir(model: str | Path) -> Path | None:
    path = Path(model)
    if path.is_dir():
        return path
    try:  # a hub id already in the local cache (runs are offline)
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(model), local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached: mlx-lm's own loading reports it
        return None


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
