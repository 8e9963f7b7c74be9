"""HF view of Llama-style decoders: llama, mistral, qwen2 (q/k/v biases), qwen3 (q_norm/k_norm).

transformers' ``LlamaForCausalLM`` tree: ``model.{embed_tokens, layers[i].{self_attn.{q,k,v,o}_proj,
mlp.{gate,up,down}_proj, mlp.act_fn, input_layernorm, post_attention_layernorm}, norm,
rotary_emb}``, ``lm_head``. Biases live in the mlx-lm Linears themselves, so qwen2 needs nothing.
"""

from __future__ import annotations

from typing import Any, Callable

import mlx.core as mx
import mlx.nn as mnn

from . import base
from .base import ALL_ATTENTION_FUNCTIONS, apply_rotary_pos_emb
from .torch_names import nn, torch


def repeat_kv(hidden_states: mx.array, n_rep: int) -> mx.array:
    """transformers' ``repeat_kv``: ``[B, kv_heads, S, hd]`` -> ``[B, kv_heads * n_rep, S, hd]``."""
    batch, num_key_value_heads, slen, head_dim = hidden_states.shape
    if n_rep == 1:
        return hidden_states
    hidden_states = mx.broadcast_to(hidden_states[:, :, None, :, :], (batch, num_key_value_heads, n_rep, slen, head_dim))
    return hidden_states.reshape(batch, num_key_value_heads * n_rep, slen, head_dim)


def eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """transformers' Llama ``eager_attention_forward``, line for line (softmax in float32)."""
    key_states = repeat_kv(key, module.num_key_value_groups)
    value_states = repeat_kv(value, module.num_key_value_groups)

    attn_weights = torch.matmul(query, key_states.transpose(0, 1, 3, 2)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask

    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).astype(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value_states)
    attn_output = attn_output.transpose(0, 2, 1, 3)

    return attn_output, attn_weights


class Attention(base.AttentionModule):
    """transformers' ``LlamaAttention`` (also Mistral's and Qwen2's): its forward is transformers'
    statement for statement, so ``.source`` names the same operations (``attention_interface_0`` is
    the implementation, ``attention_interface_1`` the call). MLX spells ``view`` ``reshape`` and
    transposes with all axes; the cache is the layer's mlx-lm ``KVCache``."""

    def __init__(self, src: mnn.Module, config: dict | None = None):
        super().__init__()
        config = config or {}
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (
            src.q_proj, src.k_proj, src.v_proj, src.o_proj)
        self.num_heads, self.num_key_value_heads = src.n_heads, src.n_kv_heads
        self.num_key_value_groups = src.n_heads // src.n_kv_heads
        self.head_dim = src.q_proj.weight.shape[0] // src.n_heads
        self.scaling = src.scale
        self.attention_dropout = config.get("attention_dropout", 0.0)
        self.is_causal = True

    def __call__(
        self,
        hidden_states: mx.array,
        position_embeddings: tuple[mx.array, mx.array] | None = None,
        attention_mask: mx.array | None = None,
        past_key_values: Any = None,
        **kwargs: Any,
    ) -> tuple[mx.array, mx.array | None]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)

        query_states = self.q_proj(hidden_states).reshape(hidden_shape).transpose(0, 2, 1, 3)
        key_states = self.k_proj(hidden_states).reshape(hidden_shape).transpose(0, 2, 1, 3)
        value_states = self.v_proj(hidden_states).reshape(hidden_shape).transpose(0, 2, 1, 3)

        cos, sin = position_embeddings
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)

        if past_key_values is not None:
            key_states, value_states = past_key_values.update_and_fetch(key_states, value_states)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.attn_implementation, eager_attention_forward
        )

        attn_output, attn_weights = attention_interface(
            self,
            query_states,
            key_states,
            value_states,
            attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            **kwargs,
        )

        attn_output = attn_output.reshape(*input_shape, -1)
        attn_output = self.o_proj(attn_output)
        return attn_output, attn_weights


class Qwen3Attention(Attention):
    """transformers' ``Qwen3Attention``: Llama's, with an RMSNorm over each head of the queries and
    keys before RoPE (``q_norm``, ``k_norm``)."""

    def __init__(self, src: mnn.Module, config: dict | None = None):
        super().__init__(src, config)
        self.q_norm, self.k_norm = src.q_norm, src.k_norm
        self.sliding_window = None  # transformers passes it on; the mask already holds any window

    def __call__(
        self,
        hidden_states: mx.array,
        position_embeddings: tuple[mx.array, mx.array],
        attention_mask: mx.array | None,
        past_key_values: Any = None,
        **kwargs: Any,
    ) -> tuple[mx.array, mx.array | None]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)

        query_states = self.q_norm(self.q_proj(hidden_states).reshape(hidden_shape)).transpose(0, 2, 1, 3)
        key_states = self.k_norm(self.k_proj(hidden_states).reshape(hidden_shape)).transpose(0, 2, 1, 3)
        value_states = self.v_proj(hidden_states).reshape(hidden_shape).transpose(0, 2, 1, 3)

        cos, sin = position_embeddings
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)

        if past_key_values is not None:
            key_states, value_states = past_key_values.update_and_fetch(key_states, value_states)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.attn_implementation, eager_attention_forward
        )

        attn_output, attn_weights = attention_interface(
            self,
            query_states,
            key_states,
            value_states,
            attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            sliding_window=self.sliding_window,  # diff with Llama
            **kwargs,
        )

        attn_output = attn_output.reshape(*input_shape, -1)
        attn_output = self.o_proj(attn_output)
        return attn_output, attn_weights


class MLP(mnn.Module):
    def __init__(self, src: mnn.Module, act: str = "silu"):
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = src.gate_proj, src.up_proj, src.down_proj
        self.act_fn = base.ACTIVATIONS[act]()

    def __call__(self, x: mx.array) -> mx.array:
        # Written as transformers writes it, so .source names its operations the same way.
        down_proj = self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))
        return down_proj


class DecoderLayer(mnn.Module):
    def __init__(self, src: mnn.Module, act: str = "silu", config: dict | None = None):
        super().__init__()
        attention = Qwen3Attention if "q_norm" in src.self_attn else Attention
        self.self_attn = attention(src.self_attn, config)
        self.mlp = MLP(src.mlp, act)
        self.input_layernorm = src.input_layernorm
        self.post_attention_layernorm = src.post_attention_layernorm

    def __call__(self, hidden_states: mx.array, attention_mask: mx.array | None = None,
                 position_ids: mx.array | None = None, past_key_values: Any = None,
                 use_cache: bool | None = False,
                 position_embeddings: tuple[mx.array, mx.array] | None = None,
                 **kwargs: Any) -> mx.array:
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        hidden_states, attn_weights = self.self_attn(
            hidden_states=hidden_states, attention_mask=attention_mask, position_ids=position_ids,
            past_key_values=past_key_values, use_cache=use_cache,
            position_embeddings=position_embeddings, **kwargs)
        base.capture_attentions(attn_weights)  # output_attentions=True collects them
        hidden_states = residual + hidden_states
        residual = hidden_states
        hidden_states = self.post_attention_layernorm(hidden_states)
        hidden_states = self.mlp(hidden_states)
        return residual + hidden_states


class Model(base.UsesAttnImplementation):
    """``LlamaModel``: embeddings, decoder layers, final norm and the shared rotary embedding."""

    def __init__(self, src: mnn.Module, layers: list[mnn.Module], layer_types: list[str],
                 windows: dict[str, int | None], rotary_emb: mnn.Module | None = None,
                 rotary_positional: bool = False):
        super().__init__()
        self.embed_tokens = src.embed_tokens
        self.layers = layers
        self.norm = src.norm
        self.rotary_emb = rotary_emb or base.RotaryEmbedding.from_mlx(src.layers[0].self_attn.rope)
        # plain attributes, not module entries: they stay out of children()/parameters()
        object.__setattr__(self, "_layer_types", tuple(layer_types))
        object.__setattr__(self, "_windows", dict(windows))
        self._rotary_positional = rotary_positional  # how this family calls rotary_emb

    def __call__(self, input_ids: mx.array | None = None, attention_mask: mx.array | None = None,
                 position_ids: mx.array | None = None, past_key_values: list | None = None,
                 inputs_embeds: mx.array | None = None, use_cache: bool | None = None,
                 **kwargs: Any):
        hidden_states = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        position_ids, masks = base.prepare_inputs(hidden_states, attention_mask, position_ids,
                                                  past_key_values, self._windows)
        if self.attn_implementation == "eager":  # transformers' eager masks: additive, always there
            T = hidden_states.shape[1]
            S = T + (past_key_values[0].offset if past_key_values else 0)
            masks = {kind: base.eager_mask(mask, T, S, hidden_states.dtype) for kind, mask in masks.items()}
        if self._rotary_positional:
            position_embeddings = self.rotary_emb(hidden_states, position_ids)
        else:
            position_embeddings = self.rotary_emb(hidden_states, position_ids=position_ids)
        caches = past_key_values or [None] * len(self.layers)
        for layer, kind, layer_cache in zip(self.layers, self._layer_types, caches):
            hidden_states = layer(hidden_states, attention_mask=masks[kind],
                                  position_embeddings=position_embeddings,
                                  position_ids=position_ids, past_key_values=layer_cache,
                                  use_cache=use_cache, **kwargs)
        hidden_states = self.norm(hidden_states)
        return base.backbone_output(hidden_states, past_key_values)


def layer_types(config: dict) -> tuple[list[str], dict[str, int | None]]:
    """transformers' per-layer attention kinds and their windows.

    Mistral and Phi-3 slide every layer when ``sliding_window`` is set; others list
    ``layer_types`` (transformers 5 writes them) or use ``use_sliding_window``."""
    n = config["num_hidden_layers"]
    window = config.get("sliding_window")
    types = config.get("layer_types")
    if not types:
        sliding = window is not None and (config.get("model_type") in ("mistral", "phi3")
                                          or config.get("use_sliding_window", False))
        types = ["sliding_attention" if sliding else "full_attention"] * n
    return list(types), {"full_attention": None, "sliding_attention": window}


def lm_head(src: mnn.Module, embedding: mnn.Module) -> mnn.Module:
    return src.lm_head if "lm_head" in src else base.TiedLMHead(embedding)


def hf_view(src: mnn.Module, config: dict) -> mnn.Module:
    act = config.get("hidden_act", "silu")
    types, windows = layer_types(config)
    layers = [DecoderLayer(layer, act, config) for layer in src.model.layers]
    model = Model(src.model, layers, types, windows,
                  rotary_positional=config["model_type"] in ("qwen2", "qwen3"))
    return base.ForCausalLM("model", model, lm_head(src, src.model.embed_tokens), len(layers))
