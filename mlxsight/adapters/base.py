"""Pieces shared by the HF-view adapters: rotary embedding, masks and positions, attention, heads.

The adapters rebuild transformers' module tree around the mlx-lm model's own submodules (the same
``nn.Linear``/``nn.RMSNorm`` objects, so the same arrays); what transformers computes in its own
modules (``rotary_emb``, ``act_fn``, the tied ``lm_head``) lives here.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import mlx.core as mx
import mlx.nn as nn

from ..context import capture, capturing
from ..outputs import BaseModelOutputWithPast, CausalLMOutputWithPast


class KVCaches(list):
    """One mlx-lm ``KVCache`` per layer, plus the attention mask of every token seen so far.

    Generation may then pass only the new tokens' mask; left padding keeps being honoured."""

    attention_mask: mx.array | None = None

    @property
    def offset(self) -> int:
        return self[0].offset if self else 0


def make_cache(num_layers: int) -> KVCaches:
    from mlx_lm.models.cache import KVCache

    # Plain caches for every layer (also sliding ones): the masks below apply the window.
    return KVCaches(KVCache() for _ in range(num_layers))


# -- modules transformers has and mlx-lm folds into functions ---------------------------------

class SiLUActivation(nn.Module):
    def __call__(self, x: mx.array) -> mx.array:
        return nn.silu(x)


class GELUTanh(nn.Module):
    """``gelu_new`` / ``gelu_pytorch_tanh``: the tanh approximation, as transformers writes it."""

    def __call__(self, x: mx.array) -> mx.array:
        return 0.5 * x * (1.0 + mx.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


class GELU(nn.Module):
    def __call__(self, x: mx.array) -> mx.array:
        return nn.gelu(x)


ACTIVATIONS = {"silu": SiLUActivation, "swish": SiLUActivation, "gelu_new": GELUTanh,
               "gelu_pytorch_tanh": GELUTanh, "gelu_fast": GELUTanh, "gelu": GELU}


class Dropout(nn.Module):
    """transformers' inference-time dropout: the identity (kept so module paths match); ``p`` is
    the configured rate, which transformers' attention passes on only in training."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def __call__(self, x: Any) -> Any:
        return x


class TiedLMHead(nn.Module):
    """``lm_head`` of a tied model: the input embedding used as the output matrix (no copy)."""

    def __init__(self, embedding: nn.Module):
        super().__init__()
        object.__setattr__(self, "_embedding", embedding)  # not a child: paths stay HF's

    @property
    def weight(self) -> mx.array:
        return self._embedding.weight

    def __call__(self, x: mx.array) -> mx.array:
        return self._embedding.as_linear(x)


# -- rotary embedding -------------------------------------------------------------------------

def rope_frequencies(rope: nn.Module) -> tuple[mx.array, float]:
    """``(inv_freq, attention_scaling)`` of an mlx-lm RoPE module, as transformers holds them."""
    if getattr(rope, "traditional", False):  # interleaved pairs: transformers has no such RoPE
        raise NotImplementedError("no HF view for traditional (interleaved) RoPE")
    if isinstance(rope, nn.RoPE):
        exponents = mx.arange(0, rope.dims, 2, dtype=mx.float32) / rope.dims
        return rope.scale / (rope.base ** exponents), 1.0
    freqs = getattr(rope, "_freqs", None)
    # SuScaledRoPE (longrope) always uses the long factors; transformers switches by length.
    if freqs is None or type(rope).__name__ == "SuScaledRoPE":
        raise NotImplementedError(f"no HF view for RoPE type {type(rope).__name__}")
    scaling = getattr(rope, "mscale", None) or 1.0
    return 1.0 / freqs.astype(mx.float32), float(scaling)


class RotaryEmbedding(nn.Module):
    """transformers' ``rotary_emb``: ``(cos, sin)``, each ``[B, T, rotary_dims]``."""

    def __init__(self, inv_freq: mx.array, attention_scaling: float = 1.0):
        super().__init__()
        self._inv_freq = inv_freq
        self.attention_scaling = attention_scaling

    @classmethod
    def from_mlx(cls, rope: nn.Module) -> "RotaryEmbedding":
        return cls(*rope_frequencies(rope))

    def __call__(self, x: mx.array, position_ids: mx.array) -> tuple[mx.array, mx.array]:
        return cos_sin(x, position_ids, self._inv_freq, self.attention_scaling)


def cos_sin(x: mx.array, position_ids: mx.array, inv_freq: mx.array,
            scaling: float) -> tuple[mx.array, mx.array]:
    freqs = position_ids[..., None].astype(mx.float32) * inv_freq
    emb = mx.concatenate([freqs, freqs], axis=-1)
    cos, sin = mx.cos(emb) * scaling, mx.sin(emb) * scaling
    return cos.astype(x.dtype), sin.astype(x.dtype)


def apply_rotary_pos_emb(q: mx.array, k: mx.array, cos: mx.array, sin: mx.array) -> tuple[mx.array, mx.array]:
    """transformers' ``apply_rotary_pos_emb``: RoPE on the queries and the keys."""
    return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)


def rotate_half(x: mx.array) -> mx.array:
    half = x.shape[-1] // 2
    return mx.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply_rotary(x: mx.array, cos: mx.array, sin: mx.array) -> mx.array:
    """RoPE on ``x [B, H, T, head_dim]``; dims beyond ``cos``'s (partial rotary) pass through."""
    cos, sin = cos[:, None], sin[:, None]
    dims = cos.shape[-1]
    if dims == x.shape[-1]:
        return x * cos + rotate_half(x) * sin
    rot, rest = x[..., :dims], x[..., dims:]
    return mx.concatenate([rot * cos + rotate_half(rot) * sin, rest], axis=-1)


# -- masks and positions ----------------------------------------------------------------------

def prepare_inputs(hidden: mx.array, attention_mask: mx.array | None, position_ids: mx.array | None,
                   cache: list | None, windows: dict[str, int | None]
                   ) -> tuple[mx.array, dict[str, mx.array | None]]:
    """Position ids and one mask per layer type (``windows``: layer type -> sliding window).

    ``attention_mask`` is ``[B, T]`` for the new tokens or ``[B, offset + T]`` for all of them
    (1 real, 0 pad). Positions default to ``clip(cumsum(mask) - 1, 0)`` as nnsight supplies them
    for left padding, else to ``offset + arange(T)``. A mask is ``None`` where plain causal
    attention is exact (transformers passes ``None`` then too), else boolean ``[B, 1, T, S]``.
    """
    B, T = hidden.shape[:2]
    offset = cache[0].offset if cache else 0
    full = attention_mask
    if full is not None and full.shape[-1] not in (T, offset + T):
        raise ValueError(f"attention_mask has {full.shape[-1]} columns; expected {T} (new tokens) "
                         f"or {offset + T} (cached and new tokens)")
    if full is not None and full.shape[-1] == T and offset:
        past = getattr(cache, "attention_mask", None)
        past = past if past is not None else mx.ones((B, offset), dtype=full.dtype)
        full = mx.concatenate([past, full], axis=-1)
    if isinstance(cache, KVCaches):
        cache.attention_mask = full
    if full is not None and bool(mx.all(full)):
        full = None  # no padding
    if position_ids is None:
        if full is None:
            position_ids = mx.arange(offset, offset + T)[None]
        else:
            position_ids = mx.maximum(mx.cumsum(full.astype(mx.int32), axis=-1) - 1, 0)[:, -T:]
    return position_ids, {kind: causal_mask(T, offset, full, w) for kind, w in windows.items()}


def causal_mask(T: int, offset: int, attention_mask: mx.array | None = None,
                window: int | None = None) -> mx.array | None:
    S = offset + T
    if attention_mask is None and (window is None or S <= window):
        return None
    q = mx.arange(offset, S)[:, None]
    k = mx.arange(S)[None]
    allowed = k <= q
    if window is not None:
        allowed = allowed & (k > q - window)
    allowed = allowed[None, None]
    if attention_mask is not None:
        # A left pad's query row allows no key at all; the attention functions below give such a
        # row what torch gives it (zeros under sdpa, an even average under eager).
        allowed = allowed & attention_mask[:, None, None, :].astype(mx.bool_)
    return allowed


# -- attention --------------------------------------------------------------------------------

# What ``attn_implementation`` may name, as transformers spells them: "sdpa" runs MLX's fused
# kernel and returns no weights; "eager" computes the probabilities and returns them.
ATTN_IMPLEMENTATIONS = ("eager", "sdpa")


class UsesAttnImplementation(nn.Module):
    """A module whose forward depends on the attention implementation its model set
    (``attn_implementation``, transformers' ``config._attn_implementation``): attention modules,
    and backbones that build the mask each implementation takes."""

    attn_implementation: str = "sdpa"


class AttentionModule(UsesAttnImplementation):
    """An HF-view attention module: it runs the implementation its model set and returns
    ``(attn_output, attn_weights)``."""


class AttentionInterface(dict):
    """transformers' ``AttentionInterface``: implementation name -> attention function, each called
    ``fn(module, query, key, value, attention_mask, *, scaling, dropout, **kwargs)`` on ``[B, H, T, hd]``
    and returning ``(attn_output [B, T, H, hd], attn_weights or None)``. "eager" is each model's own."""

    def get_interface(self, attn_implementation: str, default: Callable) -> Callable:
        if attn_implementation != "eager" and attn_implementation not in self:
            raise KeyError(f"`{attn_implementation}` is not a valid attention implementation registered in "
                           "the `AttentionInterface`")
        return self.get(attn_implementation, default)


def sdpa_attention_forward(module: nn.Module, query: mx.array, key: mx.array, value: mx.array,
                           attention_mask: mx.array | None, dropout: float = 0.0, scaling: float | None = None,
                           is_causal: bool | None = None, **kwargs: Any) -> tuple[mx.array, None]:
    """transformers' ``sdpa_attention_forward`` on MLX's fused kernel: no weights."""
    if kwargs.get("softcap") is not None:
        raise ValueError("`sdpa` attention does not support `softcap`. Try using `eager`")
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    attn_output = attention(query, key, value, scaling, attention_mask)
    attn_output = attn_output.transpose(0, 2, 1, 3)
    return attn_output, None


ALL_ATTENTION_FUNCTIONS = AttentionInterface(sdpa=sdpa_attention_forward)


def eager_mask(mask: mx.array | None, T: int, S: int, dtype: mx.Dtype) -> mx.array:
    """The mask transformers gives eager attention: the boolean (or ``None`` = causal) mask as
    ``[B, 1, T, S]`` floats, 0 where attending and the dtype's minimum elsewhere, always materialised."""
    if mask is None:
        mask = (mx.arange(S)[None] <= mx.arange(S - T, S)[:, None])[None, None]
    return mx.where(mask, mx.zeros((), dtype), mx.array(mx.finfo(dtype).min, dtype))


def attend(module: AttentionModule, q: mx.array, k: mx.array, v: mx.array,
           attention_mask: mx.array | None, scaling: float,
           softcap: float | None = None) -> tuple[mx.array, mx.array | None]:
    """Attention over ``[B, H, T, hd]`` under ``module.attn_implementation``: ``(out, weights)``
    with the ``[B, H, T, S]`` weights under "eager" and ``None`` under "sdpa", as transformers'
    attention functions return them."""
    if module.attn_implementation == "eager":
        return eager_attention(q, k, v, scaling, attention_mask, softcap)
    if softcap is not None:  # transformers' sdpa_attention_forward refuses it the same way
        raise ValueError("`sdpa` attention does not support `softcap`. Try using `eager`")
    return attention(q, k, v, scaling, attention_mask), None


def check_attn_implementation(name: Any, sdpa_refusal: str | None = None) -> str:
    """``name`` if this model can run it, else transformers' ``ValueError`` (naming it).

    ``sdpa_refusal``: why the model cannot run sdpa (Gemma 2's soft-capping), or ``None``."""
    if name not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"Specified `attn_implementation={name!r}` is not supported. The only possible "
                         "arguments are `attn_implementation=\"eager\"` and `\"sdpa\"` (mlxsight runs MLX's "
                         "fused attention or the explicit one; it has no flash or flex attention)")
    if name == "sdpa" and sdpa_refusal is not None:
        raise ValueError("this model does not support an attention implementation through "
                         f"scaled_dot_product_attention (attn_implementation='sdpa'): {sdpa_refusal}, as in "
                         "transformers; use attn_implementation='eager'")
    return name


def attention(q: mx.array, k: mx.array, v: mx.array, scale: float,
              mask: mx.array | None) -> mx.array:
    """transformers' sdpa path: ``softmax(q k^T * scale + mask) v`` over ``[B, H, T, hd]``
    (``mask`` ``None`` = causal); grouped key/value heads are shared by the fused kernel."""
    if mask is None and q.shape[2] > 1:
        mask = "causal"
    if not isinstance(mask, mx.array):
        return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)
    # torch's sdpa outputs zeros for a row that may attend nowhere (a left pad); the kernel would
    # give NaN, so such rows attend everywhere and are zeroed afterwards.
    empty = ~mx.any(mask, axis=-1, keepdims=True)
    out = mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask | empty)
    return mx.where(empty, mx.zeros((), out.dtype), out)


def eager_attention(q: mx.array, k: mx.array, v: mx.array, scale: float, mask: mx.array | None,
                    softcap: float | None = None) -> tuple[mx.array, mx.array]:
    """transformers' eager path, which also returns the ``[B, H, T, S]`` attention weights."""
    repeats = q.shape[1] // k.shape[1]
    if repeats > 1:
        v = mx.repeat(v, repeats, axis=1)
    weights = attention_weights(q, k, scale, mask, softcap).astype(q.dtype)
    return weights @ v, weights


def attention_weights(q: mx.array, k: mx.array, scale: float, mask: mx.array | None = None,
                      softcap: float | None = None) -> mx.array:
    """``[B, H, T, S]`` float32 ``softmax(softcap(q k^T * scale) + mask)`` as transformers' eager
    attention computes it: grouped key heads repeated, ``mask`` boolean ``[B, 1, T, S]`` (True =
    attend), additive floats (``eager_mask``) or ``None`` for causal; a row that may attend nowhere
    (a left pad) is uniform."""
    repeats = q.shape[1] // k.shape[1]
    if repeats > 1:
        k = mx.repeat(k, repeats, axis=1)
    scores = (q @ k.swapaxes(-1, -2)) * scale
    if softcap is not None:
        scores = mx.tanh(scores / softcap) * softcap
    T, S = scores.shape[-2:]
    if mask is not None and mx.issubdtype(mask.dtype, mx.floating):  # additive (``eager_mask``)
        return mx.softmax((scores + mask).astype(mx.float32), axis=-1)
    if mask is None:
        mask = mx.arange(S)[None] <= mx.arange(S - T, S)[:, None]
    scores = mx.where(mask, scores, mx.finfo(scores.dtype).min)
    return mx.softmax(scores.astype(mx.float32), axis=-1)


def split_heads(x: mx.array, heads: int) -> mx.array:
    B, T, _ = x.shape
    return x.reshape(B, T, heads, -1).transpose(0, 2, 1, 3)


def merge_heads(x: mx.array) -> mx.array:
    B, H, T, hd = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, H * hd)


# -- the root every adapter shares ------------------------------------------------------------

class ForCausalLM(nn.Module):
    """``XForCausalLM``: ``<backbone>`` (``model``, ``transformer``, ``gpt_neox``) and ``lm_head``.

    Returns ``CausalLMOutputWithPast`` whose ``logits`` is the very array ``lm_head`` returned.
    """

    def __init__(self, backbone_name: str, backbone: nn.Module, lm_head: nn.Module,
                 num_layers: int, final_softcap: float | None = None,
                 ids_positional: bool = False, extra_keywords: tuple[str, ...] = (),
                 sdpa_refusal: str | None = None):
        super().__init__()
        setattr(self, backbone_name, backbone)
        self.lm_head = lm_head
        self._backbone_name = backbone_name
        self.num_layers = num_layers
        self.final_logit_softcapping = final_softcap
        # how this family's transformers class calls its backbone (what `.inputs` shows)
        self._ids_positional = ids_positional
        object.__setattr__(self, "_extra_keywords", tuple(extra_keywords))
        self._sdpa_refusal = sdpa_refusal
        self._attn_implementation = None
        self.set_attn_implementation(None)
        self.eval()  # as nnsight's model: transformers' attention passes dropout only in training

    # -- attention implementation (transformers' PreTrainedModel API) ---------------------------
    @property
    def attn_implementation(self) -> str:
        """What every attention module runs: ``"sdpa"`` or ``"eager"``."""
        return self._attn_implementation

    def set_attn_implementation(self, attn_implementation: str | None) -> None:
        """Switch every attention module to ``attn_implementation`` (``None``: the default,
        "sdpa" where the model can run it, as transformers resolves it); ``config._attn_implementation``
        follows when the model carries a config. Raises ``ValueError`` for one it cannot run."""
        default = "sdpa" if self._sdpa_refusal is None else "eager"
        name = check_attn_implementation(attn_implementation or default, self._sdpa_refusal)
        for module in self.modules():
            if isinstance(module, UsesAttnImplementation):
                module.attn_implementation = name
        self._attn_implementation = name
        config = getattr(self, "config", None)
        if config is not None:
            config._attn_implementation = name

    def make_cache(self) -> KVCaches:
        return make_cache(self.num_layers)

    def __call__(self, input_ids: mx.array | None = None, attention_mask: mx.array | None = None,
                 position_ids: mx.array | None = None, cache: list | None = None,
                 past_key_values: list | None = None, inputs_embeds: mx.array | None = None,
                 use_cache: bool | None = None, logits_to_keep: int = 0,
                 output_attentions: bool | None = None, **kwargs: Any) -> CausalLMOutputWithPast:
        """transformers' ``XForCausalLM.forward``; ``output_attentions=True`` adds ``attentions``: each
        layer's attention weights (``capture_attentions``), none under sdpa, as transformers gives."""
        if not output_attentions:
            return self._forward(input_ids, attention_mask, position_ids, cache, past_key_values, inputs_embeds,
                                 use_cache, logits_to_keep, **kwargs)
        with capturing("attentions") as captured:
            out = self._forward(input_ids, attention_mask, position_ids, cache, past_key_values, inputs_embeds,
                                use_cache, logits_to_keep, **kwargs)
        out.attentions = tuple(captured["attentions"])
        return out

    def _forward(self, input_ids: mx.array | None, attention_mask: mx.array | None, position_ids: mx.array | None,
                 cache: list | None, past_key_values: list | None, inputs_embeds: mx.array | None,
                 use_cache: bool | None, logits_to_keep: int, **kwargs: Any) -> CausalLMOutputWithPast:
        cache = cache if cache is not None else past_key_values
        kw = dict.fromkeys(self._extra_keywords)
        kw.update(attention_mask=attention_mask, position_ids=position_ids, past_key_values=cache,
                  inputs_embeds=inputs_embeds,
                  use_cache=cache is not None if use_cache is None else use_cache, **kwargs)
        backbone = getattr(self, self._backbone_name)
        outputs = backbone(input_ids, **kw) if self._ids_positional else backbone(
            input_ids=input_ids, **kw)
        hidden = outputs.last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:, :]
        logits = self.lm_head(hidden)
        if self.final_logit_softcapping is not None:
            cap = self.final_logit_softcapping
            logits = mx.tanh(logits / cap) * cap
        return CausalLMOutputWithPast(logits=logits, past_key_values=outputs.past_key_values)


def capture_attentions(attn_weights: mx.array | None) -> None:
    """A decoder layer reports its attention module's weights (``None`` under sdpa) to a forward
    called with ``output_attentions=True`` (transformers' ``OutputRecorder(attention, index=1)``)."""
    capture("attentions", attn_weights)


def backbone_output(hidden: mx.array, cache: list | None) -> BaseModelOutputWithPast:
    return BaseModelOutputWithPast(last_hidden_state=hidden, past_key_values=cache)
