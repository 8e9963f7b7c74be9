"""Architecture-independent access to a language model: ``standardize(model)``.

One ``Standardized`` gives the decoder layers, each layer's attention and MLP block, the embedding,
the final norm and the unembedding (as envoys of the traced model, so ``.output`` works on them in a
trace), and the sizes tools need. It covers every family mlxsight adapts (llama, mistral, qwen2,
qwen3, gemma2, gemma3, phi3, olmo2, gpt2, gpt_neox) in the HF view, mlx-lm's own tree
(``view="mlx"``), and nnsight models (transformers' tree, the same paths as the HF view).

Paths are found by trying the names these trees use. For any other model, pass them:
``standardize(model, layers="backbone.blocks", attention="attn", final_norm="backbone.norm_out")``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import reduce
from typing import Any

from . import backend

# Where each part lives, by the names transformers and mlx-lm use (first match wins).
LAYERS = ("model.layers", "transformer.h", "gpt_neox.layers", "model.h", "layers", "h")
ATTENTION = ("self_attn", "attn", "attention")  # relative to a layer
MLP = ("mlp", "feed_forward")  # relative to a layer
EMBEDDING = ("model.embed_tokens", "transformer.wte", "gpt_neox.embed_in", "model.wte", "model.embed_in",
             "embed_tokens", "wte")
FINAL_NORM = ("model.norm", "transformer.ln_f", "gpt_neox.final_layer_norm", "model.ln_f",
              "model.final_layer_norm", "norm", "ln_f")
UNEMBEDDING = ("lm_head", "embed_out", "model.embed_out")  # none: tied to the embedding

# config attribute names per size (transformers' and GPT-2's spellings)
_SIZES = {
    "n_layers": ("num_hidden_layers", "n_layer", "num_layers"),
    "n_heads": ("num_attention_heads", "n_head"),
    "n_kv_heads": ("num_key_value_heads", "n_kv_heads"),
    "d_model": ("hidden_size", "n_embd", "d_model"),
    "d_head": ("head_dim",),
    "vocab": ("vocab_size",),
}


class ArchitectureError(LookupError):
    """A part of the model could not be found; the message names it and how to pass its path."""


@dataclass
class Standardized:
    """A model seen through architecture-independent names.

    Envoys (``layers[i]``, ``attention[i]``, ``mlp[i]``, ``embedding``, ``final_norm``,
    ``unembedding``) belong to ``model``: read ``.output`` on them inside ``model.trace``. ``paths``
    holds each part's dotted path (``{"layers": "model.layers", ...}``). ``unembedding`` is ``None``
    when the output matrix is tied to the embedding in a tree that has no ``lm_head`` module
    (mlx-lm's view of tied models); ``logits`` handles both.
    """

    model: Any
    backend: str  # "mlx" or "torch"
    family: str  # config.model_type, e.g. "llama", "gemma3_text"
    layers: list
    attention: list
    mlp: list
    embedding: Any
    final_norm: Any
    unembedding: Any
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    vocab: int
    final_logit_softcap: float | None = None
    paths: dict[str, str] = field(default_factory=dict)

    @property
    def tied(self) -> bool:
        """Whether the output matrix is the input embedding."""
        return self.unembedding is None or bool(getattr(self.model.config, "tie_word_embeddings", False))

    def logits(self, hidden: Any) -> Any:
        """Final norm, unembedding and (Gemma 2) final logit soft-capping of residual states.

        Outside a trace on plain backend tensors (any leading shape), or inside one on
        values read from the model."""
        x = self.final_norm(hidden)
        if self.unembedding is not None:
            x = self.unembedding(x)
        else:
            from ..tracer import apply

            x = apply(_as_linear, self.embedding, x)
        if self.final_logit_softcap is not None:
            cap = self.final_logit_softcap
            from ..tracer import apply

            x = apply(_softcap, x, cap) if self.backend == backend.MLX else backend.tanh(x / cap) * cap
        return x


def _as_linear(embedding: Any, x: Any) -> Any:
    module = getattr(embedding, "mlx_module", embedding)  # an envoy outside a trace holds the module
    return module.as_linear(x)


def _softcap(x: Any, cap: float) -> Any:
    return backend.tanh(x / cap) * cap


def standardize(model: Any, *, layers: str | None = None, attention: str | None = None,
                mlp: str | None = None, embedding: str | None = None, final_norm: str | None = None,
                unembedding: str | None = None, **sizes: int) -> Standardized:
    """Architecture-independent access to ``model`` (an mlxsight or nnsight language model).

    Each keyword overrides where a part lives (dotted paths from the root; ``attention`` and
    ``mlp`` relative to a layer) or a size (``n_layers``, ``n_heads``, ``n_kv_heads``, ``d_model``,
    ``d_head``, ``vocab``). Raises ``ArchitectureError`` naming each part it could not find.
    """
    kind = backend.kind(model)
    config = getattr(model, "config", None)
    missing: list[str] = []

    def find(role: str, given: str | None, candidates: tuple[str, ...], root: Any = model) -> tuple[Any, str]:
        for path in ((given,) if given else candidates):
            found = _resolve(root, path)
            if found is not None:
                return found, path
        if given:
            missing.append(f"{role}: no module at {given!r}")
        else:
            missing.append(f"{role}: none of {', '.join(candidates)} (pass {role}='path')")
        return None, ""

    layers_envoy, layers_path = find("layers", layers, LAYERS)
    layer_list = list(layers_envoy) if layers_envoy is not None else []
    attn_list: list = []
    mlp_list: list = []
    attn_path = mlp_path = ""
    if layer_list:
        _, attn_path = find("attention", attention, ATTENTION, layer_list[0])
        _, mlp_path = find("mlp", mlp, MLP, layer_list[0])
        attn_list = [_resolve(layer, attn_path) for layer in layer_list] if attn_path else []
        mlp_list = [_resolve(layer, mlp_path) for layer in layer_list] if mlp_path else []
    embed, embed_path = find("embedding", embedding, EMBEDDING)
    norm, norm_path = find("final_norm", final_norm, FINAL_NORM)
    head, head_path = None, ""
    for path in ((unembedding,) if unembedding else UNEMBEDDING):
        head = _resolve(model, path)
        if head is not None:
            head_path = path
            break
    if head is None and unembedding:
        missing.append(f"unembedding: no module at {unembedding!r}")
    elif head is None and embed is not None and not hasattr(embed, "as_linear"):
        missing.append(f"unembedding: none of {', '.join(UNEMBEDDING)}, and the embedding cannot be used "
                       "as the output matrix (pass unembedding='path')")

    found_sizes = {name: sizes.get(name, _config_value(config, names)) for name, names in _SIZES.items()}
    if found_sizes["n_layers"] is None and layer_list:
        found_sizes["n_layers"] = len(layer_list)
    if found_sizes["n_kv_heads"] is None:
        found_sizes["n_kv_heads"] = found_sizes["n_heads"]
    if found_sizes["d_head"] is None and found_sizes["d_model"] and found_sizes["n_heads"]:
        found_sizes["d_head"] = found_sizes["d_model"] // found_sizes["n_heads"]
    missing += [f"{name}: not in the config (pass {name}=N)" for name, v in found_sizes.items() if v is None]
    if missing:
        raise ArchitectureError(
            f"standardize: could not find these parts of {type(model).__name__} "
            f"(model_type {getattr(config, 'model_type', None)!r}):\n  " + "\n  ".join(missing))

    return Standardized(
        model=model, backend=kind, family=str(getattr(config, "model_type", "") or ""),
        layers=layer_list, attention=attn_list, mlp=mlp_list, embedding=embed, final_norm=norm,
        unembedding=head, final_logit_softcap=getattr(config, "final_logit_softcapping", None),
        paths={"layers": layers_path, "attention": attn_path, "mlp": mlp_path, "embedding": embed_path,
               "final_norm": norm_path, "unembedding": head_path},
        **{k: int(v) for k, v in found_sizes.items()})


def _resolve(root: Any, path: str) -> Any:
    try:
        return reduce(getattr, path.split("."), root)
    except (AttributeError, KeyError, IndexError):
        return None


def _config_value(config: Any, names: tuple[str, ...]) -> Any:
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return None
