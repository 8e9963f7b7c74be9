"""HF view of Phi-3: fused ``self_attn.qkv_proj`` and ``mlp.gate_up_proj``, ``mlp.activation_fn``,
``resid_attn_dropout``/``resid_mlp_dropout`` around the residual adds, partial rotary dims.

The rest (``model.{embed_tokens, layers, norm, rotary_emb}``, ``lm_head``) is Llama's.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn

from . import base
from .llama import Model, layer_types, lm_head


class Attention(base.AttentionModule):
    def __init__(self, src: nn.Module):
        super().__init__()
        self.o_proj, self.qkv_proj = src.o_proj, src.qkv_proj
        self.num_heads, self.num_key_value_heads = src.n_heads, src.n_kv_heads
        self.head_dim, self.scaling = src.head_dim, src.scale

    def __call__(self, hidden_states: mx.array, position_embeddings: tuple[mx.array, mx.array],
                 attention_mask: mx.array | None, past_key_values: Any = None,
                 **kwargs: Any) -> tuple[mx.array, mx.array | None]:
        qkv = self.qkv_proj(hidden_states)
        q_end = self.num_heads * self.head_dim
        k_end = q_end + self.num_key_value_heads * self.head_dim
        q = base.split_heads(qkv[..., :q_end], self.num_heads)
        k = base.split_heads(qkv[..., q_end:k_end], self.num_key_value_heads)
        v = base.split_heads(qkv[..., k_end:], self.num_key_value_heads)
        cos, sin = position_embeddings
        q, k = base.apply_rotary(q, cos, sin), base.apply_rotary(k, cos, sin)
        if past_key_values is not None:
            k, v = past_key_values.update_and_fetch(k, v)
        attn_output, attn_weights = base.attend(self, q, k, v, attention_mask, self.scaling)
        return self.o_proj(base.merge_heads(attn_output)), attn_weights


class MLP(nn.Module):
    def __init__(self, src: nn.Module, act: str):
        super().__init__()
        self.gate_up_proj, self.down_proj = src.gate_up_proj, src.down_proj
        self.activation_fn = base.ACTIVATIONS[act]()

    def __call__(self, hidden_states: mx.array) -> mx.array:
        gate, up_states = mx.split(self.gate_up_proj(hidden_states), 2, axis=-1)
        return self.down_proj(up_states * self.activation_fn(gate))


class DecoderLayer(nn.Module):
    def __init__(self, src: nn.Module, act: str):
        super().__init__()
        self.self_attn = Attention(src.self_attn)
        self.mlp = MLP(src.mlp, act)
        self.input_layernorm = src.input_layernorm
        self.post_attention_layernorm = src.post_attention_layernorm
        self.resid_attn_dropout, self.resid_mlp_dropout = base.Dropout(), base.Dropout()

    def __call__(self, hidden_states: mx.array, attention_mask: mx.array | None = None,
                 position_ids: mx.array | None = None, past_key_values: Any = None,
                 use_cache: bool | None = False,
                 position_embeddings: tuple[mx.array, mx.array] | None = None,
                 **kwargs: Any) -> mx.array:
        residual = hidden_states
        hidden_states, attn_weights = self.self_attn(
            hidden_states=self.input_layernorm(hidden_states), attention_mask=attention_mask,
            position_ids=position_ids, past_key_values=past_key_values, use_cache=use_cache,
            position_embeddings=position_embeddings, **kwargs)
        base.capture_attentions(attn_weights)  # output_attentions=True collects them
        hidden_states = residual + self.resid_attn_dropout(hidden_states)
        residual = hidden_states
        hidden_states = self.mlp(self.post_attention_layernorm(hidden_states))
        return residual + self.resid_mlp_dropout(hidden_states)


def hf_view(src: nn.Module, config: dict) -> nn.Module:
    types, windows = layer_types(config)
    layers = [DecoderLayer(layer, config.get("hidden_act", "silu")) for layer in src.model.layers]
    model = Model(src.model, layers, types, windows)
    return base.ForCausalLM("model", model, lm_head(src, src.model.embed_tokens), len(layers))
