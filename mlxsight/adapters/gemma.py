"""HF view of Gemma 2 and Gemma 3 (text): sandwich norms, a scaled embedding, sliding layers.

What differs from Llama: ``embed_tokens`` returns embeddings times ``sqrt(hidden_size)`` (scaled
inside transformers' ``GemmaTextScaledWordEmbedding``); each layer has ``input_layernorm``,
``post_attention_layernorm``, ``pre_feedforward_layernorm`` and ``post_feedforward_layernorm``;
the MLP's ``act_fn`` is the tanh GELU. Gemma 2 soft-caps the attention logits, so it runs eager
attention only (transformers refuses sdpa for it too), and soft-caps the final logits. Gemma 3 adds
``q_norm``/``k_norm`` and one ``rotary_emb`` called once per layer type
(``rotary_emb(x, position_ids, layer_type)``), sliding layers with their own RoPE base.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn

from . import base
from .llama import MLP, layer_types, lm_head


class ScaledEmbedding(nn.Module):
    """``embed_tokens``: the mlx-lm embedding's own arrays (also quantized ones), output scaled by
    ``sqrt(hidden_size)`` inside the module as in transformers."""

    def __init__(self, src: nn.Module, scale: float):
        super().__init__()
        for key, value in src.items():
            if isinstance(value, mx.array):
                self[key] = value  # weight (scales, biases): the same arrays
        for attr in ("group_size", "bits", "mode"):
            if hasattr(src, attr):
                setattr(self, attr, getattr(src, attr))
        object.__setattr__(self, "_kind", type(src))  # nn.Embedding or nn.QuantizedEmbedding
        self.embed_scale = scale

    def __call__(self, input_ids: mx.array) -> mx.array:
        embeds = self._kind.__call__(self, input_ids)
        return embeds * mx.array(self.embed_scale, dtype=embeds.dtype)

    def as_linear(self, x: mx.array) -> mx.array:
        return self._kind.as_linear(self, x)


class Attention(base.AttentionModule):
    def __init__(self, src: nn.Module, config: dict):
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (
            src.q_proj, src.k_proj, src.v_proj, src.o_proj)
        if "q_norm" in src:
            self.q_norm, self.k_norm = src.q_norm, src.k_norm
        self.num_heads, self.num_key_value_heads = src.n_heads, src.n_kv_heads
        self.scaling = config["query_pre_attn_scalar"] ** -0.5
        # Only Gemma 2 soft-caps: transformers' Gemma 3 (and mlx-lm's) never applies the config value.
        self.attn_logit_softcapping = (config.get("attn_logit_softcapping")
                                       if config["model_type"] == "gemma2" else None)

    def __call__(self, hidden_states: mx.array, position_embeddings: tuple[mx.array, mx.array],
                 attention_mask: mx.array | None = None, past_key_values: Any = None,
                 **kwargs: Any) -> tuple[mx.array, mx.array | None]:
        B, T, _ = hidden_states.shape
        q = base.split_heads(self.q_proj(hidden_states), self.num_heads)
        k = base.split_heads(self.k_proj(hidden_states), self.num_key_value_heads)
        v = base.split_heads(self.v_proj(hidden_states), self.num_key_value_heads)
        if "q_norm" in self:  # Gemma 3 normalises [B, H, T, hd], after the transpose
            q, k = self.q_norm(q), self.k_norm(k)
        cos, sin = position_embeddings
        q, k = base.apply_rotary(q, cos, sin), base.apply_rotary(k, cos, sin)
        if past_key_values is not None:
            k, v = past_key_values.update_and_fetch(k, v)
        attn_output, attn_weights = base.attend(self, q, k, v, attention_mask, self.scaling,
                                                softcap=self.attn_logit_softcapping)
        return self.o_proj(base.merge_heads(attn_output)), attn_weights


class DecoderLayer(nn.Module):
    def __init__(self, src: nn.Module, config: dict):
        super().__init__()
        self.self_attn = Attention(src.self_attn, config)
        self.mlp = MLP(src.mlp, config.get("hidden_activation", "gelu_pytorch_tanh"))
        self.input_layernorm = src.input_layernorm
        self.post_attention_layernorm = src.post_attention_layernorm
        self.pre_feedforward_layernorm = src.pre_feedforward_layernorm
        self.post_feedforward_layernorm = src.post_feedforward_layernorm

    def __call__(self, hidden_states: mx.array,
                 position_embeddings: tuple[mx.array, mx.array] | None = None,
                 attention_mask: mx.array | None = None, position_ids: mx.array | None = None,
                 past_key_values: Any = None, **kwargs: Any) -> mx.array:
        residual = hidden_states
        hidden_states, attn_weights = self.self_attn(
            hidden_states=self.input_layernorm(hidden_states),
            position_embeddings=position_embeddings, attention_mask=attention_mask,
            position_ids=position_ids, past_key_values=past_key_values, **kwargs)
        base.capture_attentions(attn_weights)  # output_attentions=True collects them
        hidden_states = residual + self.post_attention_layernorm(hidden_states)
        residual = hidden_states
        hidden_states = self.mlp(self.pre_feedforward_layernorm(hidden_states))
        return residual + self.post_feedforward_layernorm(hidden_states)


class LayerTypeRotaryEmbedding(nn.Module):
    """Gemma 3's ``rotary_emb``: one frequency set per layer type, chosen by the third argument."""

    def __init__(self, ropes: dict[str, nn.Module]):
        super().__init__()
        object.__setattr__(self, "_frequencies",
                           {kind: base.rope_frequencies(rope) for kind, rope in ropes.items()})

    def __call__(self, x: mx.array, position_ids: mx.array,
                 layer_type: str | None = None) -> tuple[mx.array, mx.array]:
        return base.cos_sin(x, position_ids, *self._frequencies[layer_type or "full_attention"])


class Model(nn.Module):
    def __init__(self, src: nn.Module, config: dict, types: list[str],
                 windows: dict[str, int | None]):
        super().__init__()
        self.embed_tokens = ScaledEmbedding(src.embed_tokens, config["hidden_size"] ** 0.5)
        self.layers = [DecoderLayer(layer, config) for layer in src.layers]
        self.norm = src.norm
        ropes = {kind: src.layers[types.index(kind)].self_attn.rope
                 for kind in dict.fromkeys(types)}
        self._per_type = config["model_type"] == "gemma3_text"
        self.rotary_emb = (LayerTypeRotaryEmbedding(ropes) if self._per_type
                           else base.RotaryEmbedding.from_mlx(src.layers[0].self_attn.rope))
        # plain attributes, not module entries: they stay out of children()/parameters()
        object.__setattr__(self, "_layer_types", tuple(types))
        object.__setattr__(self, "_windows", dict(windows))

    def __call__(self, input_ids: mx.array | None = None, attention_mask: mx.array | None = None,
                 position_ids: mx.array | None = None, past_key_values: list | None = None,
                 inputs_embeds: mx.array | None = None, use_cache: bool | None = None,
                 **kwargs: Any):
        hidden_states = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        position_ids, masks = base.prepare_inputs(hidden_states, attention_mask, position_ids,
                                                  past_key_values, self._windows)
        if self._per_type:
            position_embeddings = {kind: self.rotary_emb(hidden_states, position_ids, kind)
                                   for kind in dict.fromkeys(self._layer_types)}
        else:
            shared = self.rotary_emb(hidden_states, position_ids)
            position_embeddings = {kind: shared for kind in self._layer_types}
        caches = past_key_values or [None] * len(self.layers)
        for layer, kind, layer_cache in zip(self.layers, self._layer_types, caches):
            hidden_states = layer(hidden_states, attention_mask=masks[kind],
                                  position_embeddings=position_embeddings[kind],
                                  position_ids=position_ids, past_key_values=layer_cache, **kwargs)
        return base.backbone_output(self.norm(hidden_states), past_key_values)


def hf_view(src: nn.Module, config: dict) -> nn.Module:
    types, windows = layer_types(config)
    if not config.get("layer_types"):  # older configs: Gemma 2 alternates, Gemma 3 has a pattern
        types = ["sliding_attention" if getattr(layer.self_attn, "is_sliding", i % 2 == 0)
                 else "full_attention" for i, layer in enumerate(src.model.layers)]
    model = Model(src.model, config, types, windows)
    # transformers' Gemma 2 has `_supports_sdpa = False`: it resolves to eager and refuses sdpa.
    refusal = ("Gemma 2 soft-caps its attention logits, which the fused kernel cannot"
               if config["model_type"] == "gemma2" else None)
    return base.ForCausalLM("model", model, lm_head(src, model.embed_tokens),
                            len(model.layers), config.get("final_logit_softcapping"),
                            sdpa_refusal=refusal)
