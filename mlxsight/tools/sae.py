"""Sparse autoencoders: one object for SAELens, GemmaScope and sparsify checkpoints.

``SAE.load(path)`` reads any of the three formats (safetensors or npz only, never pickles) into the
SAELens parametrisation: ``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae, d_in]``,
``b_dec [d_in]``, plus ``threshold`` (JumpReLU) or ``b_gate``/``r_mag``/``b_mag`` (gated).
``encode``/``decode`` follow SAELens 6 exactly (``apply_b_dec_to_input``, run-time activation
normalisation, TopK's decoder-norm rescaling), and run on whatever the caller holds: an ``mx.array``,
an mlxsight proxy inside a trace (recorded with ``mlxsight.apply``), or a torch tensor inside an
nnsight trace (computed in torch, so gradients flow there too). ``save`` writes SAELens's format.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import mlx.core as mx
import numpy as np

from . import backend

ARCHITECTURES = ("standard", "jumprelu", "topk", "gated")
SAE_LENS_WEIGHTS = "sae_weights.safetensors"
SAE_LENS_CFG = "cfg.json"
SPARSIFY_WEIGHTS = "sae.safetensors"
# The SAELens config-format version we read and write (handle_config_defaulting keys on it).
SAE_LENS_FORMAT = "6.0.0"
_PARAMS = {
    "standard": ("W_enc", "b_enc", "W_dec", "b_dec"),
    "topk": ("W_enc", "b_enc", "W_dec", "b_dec"),
    "jumprelu": ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"),
    "gated": ("W_enc", "b_gate", "r_mag", "b_mag", "W_dec", "b_dec"),
}
_DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16, "float64": mx.float64}


# --- where an SAE reads ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Site:
    """Where an SAE reads: a transformer block (``layer``), the part of it (``part``: ``""`` for the
    block itself, ``"mlp"``, ``"attn"``, ``"embed"``) and whether it reads the module's ``output``
    or ``input``. ``hook_name`` is the name the checkpoint used (TransformerLens or sparsify);
    ``path`` an explicit module path, when given, wins over layer/part."""

    hook_name: str
    layer: int | None = None
    part: str = ""
    kind: str = "output"
    path: str | None = None

    @classmethod
    def parse(cls, name: str) -> "Site":
        """A site from a TransformerLens hook name (``blocks.3.hook_resid_post``), a sparsify
        hookpoint (``layers.3``, ``layers.3.mlp``) or a module path (``model.layers.3``,
        ``model.layers.3:input``)."""
        patterns = [
            (r"blocks\.(\d+)\.hook_resid_post", "", "output"),
            (r"blocks\.(\d+)\.hook_resid_pre", "", "input"),
            (r"blocks\.(\d+)\.hook_mlp_out", "mlp", "output"),
            (r"blocks\.(\d+)\.hook_attn_out", "attn", "output"),
            (r"layers[._](\d+)", "", "output"),
            (r"layers[._](\d+)\.mlp", "mlp", "output"),
            (r"layers[._](\d+)\.(?:self_attn|attn)", "attn", "output"),
        ]
        for pattern, part, kind in patterns:
            m = re.fullmatch(pattern, name)
            if m:
                return cls(name, int(m.group(1)), part, kind)
        if name in ("hook_embed", "embed_tokens"):
            return cls(name, None, "embed", "output")
        path, _, kind = name.partition(":")
        if kind not in ("", "output", "input"):
            raise ValueError(f"unknown site {name!r}: a module path may end in ':input' or ':output'")
        m = re.search(r"\.(?:layers|h)\.(\d+)", "." + path)
        return cls(name, int(m.group(1)) if m else None, "", kind or "output", path=path)

    def module(self, model: Any) -> Any:
        """The envoy (mlxsight or nnsight) of the module this site reads, on ``model``."""
        if self.path is not None:
            return _walk(model, self.path)
        if self.part == "embed":
            return _first(model, ("model.embed_tokens", "transformer.wte", "gpt_neox.embed_in", "embed_tokens"))
        if self.layer is None:
            raise ValueError(f"site {self.hook_name!r} names no layer")
        layers = _first(model, ("model.layers", "transformer.h", "gpt_neox.layers", "layers"))
        block = layers[self.layer]
        if self.part == "mlp":
            return _first(block, ("mlp",))
        if self.part == "attn":
            return _first(block, ("self_attn", "attn", "attention"))
        return block

    def read(self, model: Any) -> Any:
        """The activation this site reads, inside a trace (the first element of a tuple output,
        such as transformers' ``(attn_output, attn_weights)``)."""
        value = getattr(self.module(model), self.kind)
        return value[0] if backend.is_sequence(value) else value

    def write(self, model: Any, value: Any) -> None:
        """Replace the activation this site reads, inside a trace."""
        module = self.module(model)
        current = getattr(module, self.kind)
        if backend.is_sequence(current):
            current[0][...] = value  # in place: the other members of the tuple stay as they are
        else:
            setattr(module, self.kind, value)


def _walk(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


def _first(obj: Any, paths: tuple[str, ...]) -> Any:
    for path in paths:
        try:
            return _walk(obj, path)
        except (AttributeError, KeyError, IndexError):
            continue
    raise AttributeError(f"none of {', '.join(paths)} on {type(obj).__name__}")


# --- array backends -------------------------------------------------------------------------------

class _MLX:
    """The few array operations encode/decode need, on mx.arrays."""

    @staticmethod
    def relu(x):
        return mx.maximum(x, 0)

    @staticmethod
    def exp(x):
        return mx.exp(x)

    @staticmethod
    def row_norm(w):
        return mx.linalg.norm(w, axis=-1)

    @staticmethod
    def cast(x, like):
        return x.astype(like.dtype)

    @staticmethod
    def topk_relu(x, k: int):
        """Keep each row's k largest entries (then ReLU them); zero the rest (SAELens's TopK)."""
        idx = mx.argpartition(-x, kth=k - 1, axis=-1)[..., :k]
        values = mx.maximum(mx.take_along_axis(x, idx, axis=-1), 0)
        return mx.put_along_axis(mx.zeros_like(x), idx, values, axis=-1)

    @staticmethod
    def mean_std(x):
        mu = mx.mean(x, axis=-1, keepdims=True)
        centred = x - mu
        # torch's Tensor.std is the unbiased estimate
        std = mx.sqrt(mx.sum(centred * centred, axis=-1, keepdims=True) / (x.shape[-1] - 1))
        return mu, std

    @staticmethod
    def norm(x):
        return mx.linalg.norm(x, axis=-1, keepdims=True)


class _Torch:
    """The same operations on torch tensors (inside nnsight traces)."""

    @staticmethod
    def relu(x):
        return x.relu()

    @staticmethod
    def exp(x):
        return x.exp()

    @staticmethod
    def row_norm(w):
        return w.norm(dim=-1)

    @staticmethod
    def cast(x, like):
        return x.to(like.dtype)

    @staticmethod
    def topk_relu(x, k: int):
        import torch

        values, idx = torch.topk(x, k=k, dim=-1, sorted=False)
        return torch.zeros_like(x).scatter(-1, idx, values.relu())

    @staticmethod
    def mean_std(x):
        mu = x.mean(dim=-1, keepdim=True)
        return mu, (x - mu).std(dim=-1, keepdim=True)

    @staticmethod
    def norm(x):
        return x.norm(dim=-1, keepdim=True)


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "requires_grad")


# --- the SAE --------------------------------------------------------------------------------------

@dataclass
class SAE:
    """A sparse autoencoder in SAELens's parametrisation, with the site it reads.

    ``architecture`` is one of ``standard`` (ReLU), ``jumprelu``, ``topk``, ``gated``; ``params``
    holds mx.arrays (see the module docstring). ``site`` says which layer and module the SAE reads;
    ``metadata`` keeps the checkpoint's own (``model_name``, ``hook_name``, ...)."""

    architecture: str
    params: dict[str, mx.array]
    site: Site | None = None
    k: int | None = None
    apply_b_dec_to_input: bool = True
    normalize_activations: str = "none"
    rescale_acts_by_decoder_norm: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = "sae_lens"
    _torch_params: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown SAE architecture {self.architecture!r}; known: {', '.join(ARCHITECTURES)}")
        missing = [n for n in _PARAMS[self.architecture] if n not in self.params]
        if missing:
            raise ValueError(f"{self.architecture} SAE is missing parameters {missing}")
        if self.architecture == "topk" and not self.k:
            raise ValueError("a topk SAE needs k")
        if self.normalize_activations not in ("none", "expected_average_only_in", "constant_norm_rescale",
                                              "layer_norm"):
            raise NotImplementedError(f"normalize_activations={self.normalize_activations!r} is not supported")
        d_in, d_sae = self.params["W_enc"].shape
        if self.params["W_dec"].shape != (d_sae, d_in):
            raise ValueError(f"W_dec has shape {self.params['W_dec'].shape}, expected {(d_sae, d_in)}")

    # -- shape and metadata
    @property
    def d_in(self) -> int:
        return self.params["W_enc"].shape[0]

    @property
    def d_sae(self) -> int:
        return self.params["W_enc"].shape[1]

    @property
    def dtype(self) -> mx.Dtype:
        return self.params["W_dec"].dtype

    @property
    def hook_name(self) -> str | None:
        return self.site.hook_name if self.site else None

    @property
    def W_dec(self) -> mx.array:
        return self.params["W_dec"]

    @property
    def W_enc(self) -> mx.array:
        return self.params["W_enc"]

    def __repr__(self) -> str:
        extra = f", k={self.k}" if self.k else ""
        return (f"SAE({self.architecture}, d_in={self.d_in}, d_sae={self.d_sae}{extra}, dtype={self.dtype}, "
                f"site={self.hook_name!r}, source={self.source})")

    # -- compute
    def encode(self, x: Any) -> Any:
        """Feature activations ``[..., d_sae]`` of activations ``x [..., d_in]``."""
        return self._dispatch(self._encode, x)

    def decode(self, features: Any) -> Any:
        """The reconstruction ``[..., d_in]`` of feature activations ``[..., d_sae]``."""
        return self._dispatch(self._decode, features)

    def forward(self, x: Any) -> Any:
        """The reconstruction ``decode(encode(x))`` (run-time normalisation undone with x's own state)."""
        return self._dispatch(self._forward, x)

    __call__ = forward

    def error(self, x: Any) -> Any:
        """The reconstruction error ``x - forward(x)``, in x's dtype."""
        return self._dispatch(lambda ops, p, v: v - ops.cast(self._forward(ops, p, v), v), x)

    def splice(self, x: Any, edit: Callable[[Any], Any] | None = None) -> Any:
        """``x`` with its reconstruction replaced by the reconstruction of ``edit(encode(x))``: the
        error term ``x - forward(x)`` is kept, so ``splice(x)`` equals ``x`` up to rounding."""
        def fn(ops, p, v):
            sae_in, state = self._sae_in(ops, p, v)
            f = self._activate(ops, p, sae_in)
            clean = self._linear_decode(ops, p, f)
            edited = clean if edit is None else self._linear_decode(ops, p, edit(f))
            if state is not None:  # run-time normalisation: both reconstructions back in v's scale
                undo = (lambda y: y / state[1]) if state[0] == "scale" else (lambda y: y * state[2] + state[1])
                clean, edited = undo(clean), undo(edited)
            return ops.cast(edited, v) + (v - ops.cast(clean, v))

        return self._dispatch(fn, x)

    def hidden_pre(self, x: Any) -> Any:
        """Encoder pre-activations (the magnitude path for gated SAEs), before the nonlinearity."""
        return self._dispatch(lambda ops, p, v: self._pre(ops, p, self._sae_in(ops, p, v)[0]), x)

    def _dispatch(self, fn, x: Any) -> Any:
        if backend.is_proxy(x):
            from ..tracer import apply

            return apply(lambda v: fn(_MLX, self.params, v), x)
        if _is_torch(x):
            return fn(_Torch, self._torch(x), x)
        if isinstance(x, np.ndarray):
            return np.array(fn(_MLX, self.params, mx.array(x)))
        return fn(_MLX, self.params, x)

    def _torch(self, like: Any) -> dict:
        import torch

        key = (like.device, like.dtype if like.is_floating_point() else torch.float32)
        if key not in self._torch_params:
            self._torch_params[key] = {
                name: torch.from_numpy(np.array(value.astype(mx.float32))).to(device=key[0], dtype=_torch_dtype(self.dtype))
                for name, value in self.params.items()}
        return self._torch_params[key]

    def _sae_in(self, ops, p: dict, x: Any) -> tuple[Any, Any]:
        """SAELens's process_sae_in: cast, run-time normalisation, minus b_dec when configured.
        Returns the encoder input and the normalisation state decode needs to undo it."""
        x = ops.cast(x, p["W_enc"])
        state = None
        if self.normalize_activations == "constant_norm_rescale":
            state = ("scale", (self.d_in ** 0.5) / ops.norm(x))
            x = x * state[1]
        elif self.normalize_activations == "layer_norm":
            mu, std = ops.mean_std(x)
            state = ("ln", mu, std)
            x = (x - mu) / (std + 1e-5)
        if self.apply_b_dec_to_input:
            x = x - p["b_dec"]
        return x, state

    def _pre(self, ops, p: dict, sae_in: Any) -> Any:
        if self.architecture == "gated":
            return sae_in @ (p["W_enc"] * ops.exp(p["r_mag"])) + p["b_mag"]
        pre = sae_in @ p["W_enc"] + p["b_enc"]
        if self.architecture == "topk" and self.rescale_acts_by_decoder_norm:
            pre = pre * ops.row_norm(p["W_dec"])
        return pre

    def _encode(self, ops, p: dict, x: Any) -> Any:
        return self._activate(ops, p, self._sae_in(ops, p, x)[0])

    def _activate(self, ops, p: dict, sae_in: Any) -> Any:
        pre = self._pre(ops, p, sae_in)
        if self.architecture == "standard":
            return ops.relu(pre)
        if self.architecture == "jumprelu":
            return ops.relu(pre) * ops.cast(pre > p["threshold"], pre)
        if self.architecture == "topk":
            return ops.topk_relu(pre, self.k)
        gate = sae_in @ p["W_enc"] + p["b_gate"]
        return ops.cast(gate > 0, pre) * ops.relu(pre)

    def _decode(self, ops, p: dict, f: Any) -> Any:
        if self.normalize_activations in ("constant_norm_rescale", "layer_norm"):
            raise ValueError(f"decode alone cannot undo normalize_activations={self.normalize_activations!r} "
                             "(it depends on the input): use forward(x) or error(x)")
        return self._linear_decode(ops, p, f)

    def _linear_decode(self, ops, p: dict, f: Any) -> Any:
        f = ops.cast(f, p["W_dec"])
        if self.architecture == "topk" and self.rescale_acts_by_decoder_norm:
            f = f / ops.row_norm(p["W_dec"])
        return f @ p["W_dec"] + p["b_dec"]

    def _forward(self, ops, p: dict, x: Any) -> Any:
        sae_in, state = self._sae_in(ops, p, x)
        out = self._linear_decode(ops, p, self._activate(ops, p, sae_in))
        if state is None:
            return out
        if state[0] == "scale":
            return out / state[1]
        return out * state[2] + state[1]

    # -- transforms
    def fold_decoder_norm(self) -> "SAE":
        """An equivalent SAE whose decoder rows have unit norm (SAELens's ``fold_W_dec_norm``):
        encoder columns, encoder biases and thresholds scaled by the old norms."""
        if self.architecture == "topk" and not self.rescale_acts_by_decoder_norm:
            raise NotImplementedError("folding decoder norms changes a TopK SAE's selection unless it was "
                                      "trained with rescale_acts_by_decoder_norm (as SAELens refuses too)")
        p = dict(self.params)
        norms = mx.maximum(mx.linalg.norm(p["W_dec"], axis=-1), 1e-8)
        p["W_dec"] = p["W_dec"] / norms[:, None]
        p["W_enc"] = p["W_enc"] * norms[None, :]
        for name in ("b_enc", "threshold", "b_gate", "b_mag"):
            if name in p:
                p[name] = p[name] * norms
        return replace(self, params=p, _torch_params={})

    def astype(self, dtype: Any) -> "SAE":
        """A copy with parameters in ``dtype`` (an mx.Dtype or a name such as ``"bfloat16"``)."""
        dtype = _DTYPES[dtype] if isinstance(dtype, str) else dtype
        return replace(self, params={n: v.astype(dtype) for n, v in self.params.items()}, _torch_params={})

    def decoder_direction(self, feature: int) -> mx.array:
        """The vector feature ``feature`` adds to the reconstruction per unit activation."""
        row = self.params["W_dec"][feature]
        if self.architecture == "topk" and self.rescale_acts_by_decoder_norm:
            row = row / mx.linalg.norm(row)
        return row

    # -- files
    @classmethod
    def load(cls, path: str | Path, *, hook: str | None = None, dtype: Any = None,
             fold_decoder_norm: bool = False) -> "SAE":
        """Load an SAE, detecting the format: a SAELens directory (``cfg.json`` +
        ``sae_weights.safetensors``), a sparsify directory (``cfg.json`` + ``sae.safetensors``) or a
        GemmaScope parameter file (``params.npz``, or a safetensors file of ``W_enc``, ``W_dec``,
        ``b_enc``, ``b_dec``, ``threshold``; a directory holding one works too).

        ``hook`` overrides (or supplies) the site it reads: a TransformerLens hook name, a sparsify
        hookpoint or a module path. ``dtype`` casts the parameters."""
        path = Path(path)
        if path.is_dir() and (path / SAE_LENS_CFG).exists() and (path / SAE_LENS_WEIGHTS).exists():
            sae = _load_sae_lens(path)
        elif path.is_dir() and (path / SAE_LENS_CFG).exists() and (path / SPARSIFY_WEIGHTS).exists():
            sae = _load_sparsify(path)
        elif path.is_dir() and (path / "params.npz").exists():
            sae = _load_gemma_scope(path / "params.npz")
        elif path.is_file() and path.suffix in (".npz", ".safetensors"):
            sae = _load_gemma_scope(path)
        elif path.is_dir() and any((p / SPARSIFY_WEIGHTS).exists() for p in path.iterdir() if p.is_dir()):
            names = sorted(p.name for p in path.iterdir() if (p / SPARSIFY_WEIGHTS).exists())
            raise ValueError(f"{path} holds one sparsify SAE per hookpoint: load one of {names}")
        elif path.suffix in (".pt", ".pth", ".bin", ".pkl", ".ckpt"):
            raise ValueError(f"{path}: pickled checkpoints are never loaded; convert to safetensors first")
        else:
            raise FileNotFoundError(f"no SAE checkpoint recognised at {path} (SAELens directory, sparsify "
                                    "directory, GemmaScope params.npz/safetensors)")
        if hook is not None:
            sae = replace(sae, site=Site.parse(hook))
        if dtype is not None:
            sae = sae.astype(dtype)
        return sae.fold_decoder_norm() if fold_decoder_norm else sae

    def save(self, path: str | Path, *, model_name: str | None = None) -> Path:
        """Write the SAE in SAELens's format (``cfg.json`` + ``sae_weights.safetensors``), which
        ``sae_lens.SAE.load_from_disk`` reads back. Returns the directory."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        mx.save_safetensors(str(path / SAE_LENS_WEIGHTS), {n: self.params[n] for n in _PARAMS[self.architecture]})
        metadata = {k: v for k, v in self.metadata.items() if _jsonable(v)}
        metadata["sae_lens_version"] = SAE_LENS_FORMAT
        if model_name is not None:
            metadata["model_name"] = model_name
        if self.site is not None:
            metadata["hook_name"] = self.site.hook_name
        cfg = {
            "architecture": self.architecture, "d_in": self.d_in, "d_sae": self.d_sae,
            "dtype": _dtype_name(self.dtype), "device": "cpu", "apply_b_dec_to_input": self.apply_b_dec_to_input,
            "normalize_activations": self.normalize_activations, "reshape_activations": "none",
            "metadata": metadata,
        }
        if self.architecture == "topk":
            cfg["k"] = int(self.k)
            cfg["rescale_acts_by_decoder_norm"] = self.rescale_acts_by_decoder_norm
        (path / SAE_LENS_CFG).write_text(json.dumps(cfg, indent=2))
        return path


# --- loaders --------------------------------------------------------------------------------------

def _load_sae_lens(path: Path) -> SAE:
    cfg = json.loads((path / SAE_LENS_CFG).read_text())
    metadata = dict(cfg.get("metadata") or {})
    version = cfg.get("sae_lens_version") or metadata.get("sae_lens_version")
    if not version or int(str(version).split(".")[0]) < 6:
        # Before SAELens 6 the metadata lived at the top level, under older names.
        for old, new in (("hook_point", "hook_name"), ("activation_fn_str", "activation_fn")):
            if old in cfg:
                cfg.setdefault(new, cfg[old])
        for key in ("hook_name", "hook_layer", "hook_head_index", "model_name", "prepend_bos", "context_size",
                    "dataset_path", "neuronpedia_id"):
            if key in cfg:
                metadata.setdefault(key, cfg[key])
        if cfg.get("activation_fn") == "topk" and (cfg.get("activation_fn_kwargs") or {}).get("k") is not None:
            cfg["architecture"] = "topk"
            cfg["k"] = cfg["activation_fn_kwargs"]["k"]
        if isinstance(cfg.get("normalize_activations"), bool):
            cfg["normalize_activations"] = "expected_average_only_in" if cfg["normalize_activations"] else "none"
    architecture = cfg.get("architecture", "standard")
    if cfg.get("reshape_activations", "none") not in ("none", None):
        raise NotImplementedError("hook_z SAEs (reshape_activations='hook_z') are not supported")
    params = _read_safetensors(path / SAE_LENS_WEIGHTS)
    if "log_threshold" in params:  # older JumpReLU checkpoints
        params["threshold"] = mx.exp(params.pop("log_threshold"))
    scaling = params.pop("scaling_factor", None)
    if scaling is not None and not bool(mx.all(scaling == 1)):
        raise NotImplementedError("finetuning_scaling_factor SAEs are not supported")
    params = {n: v for n, v in params.items() if n in _PARAMS.get(architecture, ())}
    dtype = _DTYPES.get(cfg.get("dtype", "float32"), mx.float32)
    params = {n: v.astype(dtype) for n, v in params.items()}
    hook = metadata.get("hook_name")
    return SAE(architecture, params, site=Site.parse(hook) if hook else None, k=cfg.get("k"),
               apply_b_dec_to_input=cfg.get("apply_b_dec_to_input", True),
               normalize_activations=cfg.get("normalize_activations") or "none",
               rescale_acts_by_decoder_norm=bool(cfg.get("rescale_acts_by_decoder_norm", False)),
               metadata=metadata, source="sae_lens")


def _load_sparsify(path: Path) -> SAE:
    """EleutherAI sparsify: encoder.weight [d_sae, d_in], encoder.bias, W_dec [d_sae, d_in], b_dec;
    encode = TopK(ReLU((x - b_dec) @ W^T + b)), decode = acts @ W_dec + b_dec (+ x @ W_skip^T)."""
    cfg = json.loads((path / SAE_LENS_CFG).read_text())
    if cfg.get("activation", "topk") != "topk":
        raise NotImplementedError(f"sparsify activation {cfg['activation']!r} is not supported (only topk)")
    if cfg.get("transcode") or cfg.get("skip_connection"):
        raise NotImplementedError("sparsify transcoders / skip connections are not SAEs: not supported")
    raw = _read_safetensors(path / SPARSIFY_WEIGHTS)
    params = {"W_enc": raw["encoder.weight"].T, "b_enc": raw["encoder.bias"], "W_dec": raw["W_dec"],
              "b_dec": raw["b_dec"]}
    metadata = {"hook_name": path.name, "sparsify_cfg": cfg}
    return SAE("topk", params, site=Site.parse(path.name), k=int(cfg["k"]), apply_b_dec_to_input=True,
               metadata=metadata, source="sparsify")


def _load_gemma_scope(path: Path) -> SAE:
    """GemmaScope's parameter files: W_enc, W_dec, b_enc, b_dec, threshold; JumpReLU without the
    b_dec subtraction. The site comes from the path (``layer_12``, and ``-res``/``-mlp``/``-att``)."""
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            raw = {k: mx.array(data[k]) for k in data.files}
    else:
        raw = _read_safetensors(path)
    params = {("W_" + k[2:] if k.startswith("w_") else k): v for k, v in raw.items()}
    missing = [n for n in _PARAMS["jumprelu"] if n not in params]
    if missing:
        raise ValueError(f"{path}: not a GemmaScope parameter file (missing {missing})")
    params = {n: params[n].astype(mx.float32) for n in _PARAMS["jumprelu"]}
    text = str(path)
    m = re.search(r"layer_(\d+)", text)
    site = None
    if "embedding" in text:
        # As SAELens does: GemmaScope's embedding SAEs were trained on embeddings scaled by sqrt(d_model).
        d_in = params["W_enc"].shape[0]
        params["W_enc"] = params["W_enc"] / np.sqrt(d_in)
        params["W_dec"] = params["W_dec"] * np.sqrt(d_in)
        site = Site.parse("hook_embed")
    elif m:
        layer = int(m.group(1))
        hook = (f"blocks.{layer}.hook_mlp_out" if "-mlp" in text else
                f"blocks.{layer}.hook_attn_out" if "-att" in text else f"blocks.{layer}.hook_resid_post")
        site = Site.parse(hook)
    return SAE("jumprelu", params, site=site, apply_b_dec_to_input=False, metadata={"path": text},
               source="gemma_scope")


def _read_safetensors(path: Path) -> dict[str, mx.array]:
    return dict(mx.load(str(path)))


def _dtype_name(dtype: mx.Dtype) -> str:
    return {v: k for k, v in _DTYPES.items()}[dtype]


def _torch_dtype(dtype: mx.Dtype) -> Any:
    import torch

    return getattr(torch, _dtype_name(dtype))


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False
