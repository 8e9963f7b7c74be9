"""Load a checkpoint as transformers saves it (or as the hub holds it) into mlx-lm, never running
code that came with it.

transformers 5's ``save_pretrained`` nests keys mlx-lm's ``ModelArgs`` read flat (``rope_theta`` in
``rope_parameters``, GPT-2's ``n_ctx``, GPT-NeoX's ``rotary_pct``), and keeps the HF root prefix on
GPT-2's weights (``transformer.h.0...``) plus a tied ``lm_head.weight``. ``load`` fills the flat keys
a config lacks and strips what mlx-lm's ``sanitize`` does not expect; everything else is mlx-lm's own
loading.

Loading is lazy: ``load`` builds the architecture and gives it the checkpoint's arrays unread (MLX's
``mx.load`` reads a safetensors header only; the data is read when an array is first evaluated), so
``LanguageModel`` can be "not dispatched" at no cost. ``config=`` builds from a caller's config and
keeps the weights that fit, reported as transformers reports them (``Fit``).

A checkpoint can ask for its own Python: mlx-lm's ``model_file`` (an architecture file it would
import) and transformers' ``auto_map`` (model, config or tokenizer classes it would import from the
checkpoint folder, after asking "run custom code? [y/N]" on a terminal). mlxsight never runs or
offers either, whatever ``trust_remote_code`` says: weights are read from safetensors, the
tokenizer is built by transformers' own classes, and a checkpoint that cannot be used without its
code is refused with a ``CheckpointCodeError`` that says so.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
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


def _classes(config: dict, fit: "Fit | None" = None) -> tuple[Any, type]:
    """mlx-lm's (model factory, args class) for ``config``; the factory's sanitize also strips the
    HF root prefix of a transformers-saved checkpoint and, for a caller's config, keeps the weights
    that fit (``Fit``)."""
    from mlx_lm.utils import MODEL_REMAPPING

    kind = config["model_type"]
    try:
        arch = importlib.import_module(f"mlx_lm.models.{MODEL_REMAPPING.get(kind, kind)}")
    except ImportError as e:
        raise ValueError(f"model type {kind!r} is not supported by mlx-lm") from e
    prefix, dropped = _PREFIXES.get(kind, (None, ()))

    def build(args: Any) -> nn.Module:
        model = arch.Model(args)
        if prefix is None and fit is None:
            return model
        own = getattr(model, "sanitize", None)

        def sanitize(weights: dict) -> dict:
            if prefix is not None:
                weights = {k.removeprefix(prefix): v for k, v in weights.items() if k not in dropped}
            weights = own(weights) if own is not None else weights
            return fit(model, weights) if fit is not None else weights

        object.__setattr__(model, "sanitize", sanitize)  # this load only: removed after it
        return model

    return build, arch.ModelArgs


class Fit:
    """The checkpoint's weights that fit a model built from a caller's config, reported as
    transformers' ``from_pretrained(config=...)`` reports them: keys the model lacks (UNEXPECTED) are
    not used, parameters the checkpoint lacks (MISSING) keep their fresh initialisation, both logged
    as one warning; a shape mismatch raises unless ``ignore_mismatched_sizes`` (then it is
    re-initialised and reported as MISMATCH)."""

    def __init__(self, source: Any, ignore_mismatched_sizes: bool = False) -> None:
        self.source, self.ignore_mismatched_sizes = source, ignore_mismatched_sizes
        self.unexpected: list[str] = []
        self.missing: list[str] = []
        self.mismatched: list[tuple[str, tuple, tuple]] = []

    def __call__(self, model: nn.Module, weights: dict) -> dict:
        from mlx.utils import tree_flatten

        params = dict(tree_flatten(model.parameters()))
        self.unexpected = sorted(k for k in weights if k not in params)
        self.missing = sorted(k for k in params if k not in weights)
        self.mismatched = [(k, tuple(v.shape), tuple(params[k].shape)) for k, v in weights.items()
                           if k in params and tuple(v.shape) != tuple(params[k].shape)]
        self.report(type(model).__name__)
        bad = {k for k, _, _ in self.mismatched}
        return {k: v for k, v in weights.items() if k in params and k not in bad}

    def report(self, name: str) -> None:
        rows = ([f"{k}\tUNEXPECTED" for k in self.unexpected] + [f"{k}\tMISSING" for k in self.missing]
                + [f"{k}\tMISMATCH\tReinit due to size mismatch - ckpt: {c} vs model: {m}"
                   for k, c, m in self.mismatched])
        if self.mismatched and not self.ignore_mismatched_sizes:
            raise RuntimeError(f"Error(s) in loading weights for {name} from {self.source}:\n\t" + "\n\t".join(
                f"size mismatch for {k}: the checkpoint has shape {c}, the model built from the config {m}"
                for k, c, m in self.mismatched) + "\n\tYou may consider adding `ignore_mismatched_sizes=True`")
        if rows:
            logging.getLogger(__name__).warning(f"{name} LOAD REPORT from: {self.source}\n" + "\n".join(rows))


def load(path_or_repo: str | Path, revision: str | None = None, trust_remote_code: bool | None = None,
         config: dict | None = None, ignore_mismatched_sizes: bool = False) -> tuple[nn.Module, Any, dict]:
    """``(mlx-lm model, mlx-lm tokenizer wrapper, config)``; checkpoint code refused.

    The architecture is built from the checkpoint's config.json, or from ``config`` (a complete
    config, as transformers' ``config=``: the weights that fit are loaded, see ``Fit``). Nothing is
    read yet: every parameter is a lazy read of the checkpoint's safetensors (MLX's ``mx.load``
    reads only the header), so the weights are read when first evaluated (``LanguageModel.dispatch``)."""
    from mlx_lm.utils import load_model, load_tokenizer

    path = resolve(path_or_repo, revision)
    saved = json.loads((path / "config.json").read_text())
    if saved.get("model_file") is not None:
        raise CheckpointCodeError(_refusal(path_or_repo, f"its architecture file {saved['model_file']!r}",
                                           trust_remote_code))
    fit = None
    if config is not None:
        if any(k in saved for k in ("quantization", "quantization_config")):
            raise NotImplementedError(f"{path_or_repo} is quantized: mlxsight builds a quantized checkpoint from its "
                                      "own config only (config= would need its quantization re-derived)")
        config = {k: v for k, v in config.items() if k not in ("model_file", "auto_map")}
        _refuse_unbuildable(path_or_repo, path, config)
        fit = Fit(path_or_repo, ignore_mismatched_sizes)
    own = config if config is not None else saved
    try:
        model, _ = load_model(path, lazy=True, strict=fit is None, model_config={**(config or {}), **flat_keys(own)},
                              get_model_classes=functools.partial(_classes, fit=fit))
    except ValueError as e:
        if saved.get("auto_map") and "not supported" in str(e):  # an architecture only its own code defines
            what = f"its model code {saved['auto_map']!r} (mlx-lm has no {saved.get('model_type')!r} architecture)"
            raise CheckpointCodeError(_refusal(path_or_repo, what, trust_remote_code)) from None
        raise
    config = own
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


# Config keys that describe no architecture (metadata, token ids, output switches).
_NOT_ARCHITECTURE = {"transformers_version", "_name_or_path", "architectures", "dtype", "torch_dtype", "use_cache",
                     "output_attentions", "output_hidden_states", "return_dict", "bos_token_id", "eos_token_id",
                     "pad_token_id", "id2label", "label2id", "problem_type", "tokenizer_class", "task_specific_params"}


class _KeyLog(dict):
    """A config dict that remembers which keys were read (what an HF-view adapter consumes)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self.read.add(key)  # type: ignore[arg-type]
        return super().__contains__(key)


def _refuse_unbuildable(source: Any, path: Path, config: dict) -> None:
    """Refuse a ``config=`` that changes what mlx-lm's architecture (and mlxsight's HF view of it)
    never reads: the model built would silently differ from the one transformers builds."""
    import dataclasses

    from transformers import AutoConfig

    reference = AutoConfig.from_pretrained(str(path)).to_dict()
    try:  # both as transformers reads them: a partial dict means the defaults it leaves out
        given = AutoConfig.for_model(**config).to_dict()
    except (KeyError, ValueError, TypeError):
        given = config
    changed = {k for k in set(given) | set(reference)
               if k not in _NOT_ARCHITECTURE and not k.startswith("_") and given.get(k) != reference.get(k)}
    if not changed:
        return
    kind = config.get("model_type", reference.get("model_type"))
    if kind != reference.get("model_type"):
        raise NotImplementedError(f"config= is a {kind!r} config and {source} a {reference.get('model_type')!r} "
                                  "checkpoint: mlxsight builds a checkpoint's own model family only")
    full = {**config, **flat_keys(config)}
    _, args_class = _classes(full)
    read = {f.name for f in dataclasses.fields(args_class)} | {"model_type", "rope_parameters", "n_positions",
                                                               "layer_types"}
    try:
        from .adapters import hf_view

        logged = _KeyLog(full)
        build, _ = _classes(full)
        hf_view(build(args_class.from_dict(full)), logged)  # lazy: builds module objects, computes nothing
        read |= logged.read
    except ImportError:
        pass
    ignored = sorted(changed - read)
    if ignored:
        raise NotImplementedError(f"config= sets {', '.join(repr(k) for k in ignored)}, which mlx-lm's {kind!r} "
                                  f"architecture does not read: the model would not be the one transformers builds "
                                  f"from this config")


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
