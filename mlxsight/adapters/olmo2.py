"""HF view of OLMo 2: Llama's tree without ``input_layernorm``; the attention and MLP outputs are
normalised (``post_attention_layernorm``, ``post_feedforward_layernorm``) before the residual add,
and ``self_attn.q_norm``/``k_norm`` normalise the whole projection, before the head split.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn

from . import base
from .llama import MLP, Model, layer_types, lm_head


class Attention(base.AttentionModule):
    def __init__(self, src: nn.Module):
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (
            src.q_proj, src.k_proj, src.v_proj, src.o_proj)
        self.q_norm, self.k_norm = src.q_norm, src.k_norm
        self.num_heads, self.num_key_value_heads = src.n_heads, src.n_kv_heads
        self.scaling = src.scale

    def __call__(self, hidden_states: mx.array, position_embeddings: tuple[mx.array, mx.array],
                 attention_mask: mx.array | None, past_key_values: Any = None,
                 **kwargs: Any) -> tuple[mx.array, mx.array | None]:
        q = base.split_heads(self.q_norm(self.q_proj(hidden_states)), self.num_heads)
        k = base.split_heads(self.k_norm(self.k_proj(hidden_states)), self.num_key_value_heads)
        v = base.split_heads(self.v_proj(hidden_states), self.num_key_value_heads)
        cos, sin = position_embeddings
        q, k = base.apply_rotary(q, cos, sin), base.apply_rotary(k, cos, sin)
        if past_key_values is not None:
            k, v = past_key_values.update_and_fetch(k, v)
        attn_output, attn_weights = base.attend(self, q, k, v, attention_mask, self.scaling)
        return self.o_proj(base.merge_heads(attn_output)), attn_weights


class DecoderLayer(nn.Module):
    def __init__(self, src: nn.Module, act: str):
        super().__init__()
        self.self_attn = Attention(src.self_attn)
        self.mlp = MLP(src.mlp, act)
        self.post_attention_layernorm = src.post_attention_layernorm
        self.post_feedforward_layernorm = src.post_feedforward_layernorm

    def __call__(self, hidden_states: mx.array, attention_mask: mx.array | None = None,
                 position_ids: mx.array | None = None, past_key_values: Any = None,
                 use_cache: bool | None = False,
                 position_embeddings: tuple[mx.array, mx.array] | None = None,
                 **kwargs: Any) -> mx.array:
        residual = hidden_states
        hidden_states, attn_weights = self.self_attn(
            hidden_states=hidden_states, attention_mask=attention_mask, position_ids=position_ids,
            past_key_values=past_key_values, use_cache=use_cache,
            position_embeddings=position_embeddings, **kwargs)
        base.capture_attentions(attn_weights)  # output_attentions=True collects them
        hidden_states = residual + self.post_attention_layernorm(hidden_states)
        residual = hidden_states
        return residual + self.post_feedforward_layernorm(self.mlp(hidden_states))


def hf_view(src: nn.Module, config: dict) -> nn.Module:
    types, windows = layer_types(config)
    layers = [DecoderLayer(layer, config.get("hidden_act", "silu")) for layer in src.model.layers]
    model = Model(src.model, layers, types, windows)
    return base.ForCausalLM("model", model, lm_head(src, src.model.embed_tokens), len(layers))
