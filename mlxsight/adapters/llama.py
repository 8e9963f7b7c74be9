"""HF view of Llama-style decoders: llama, mistral, qwen2 (q/k/v biases), qwen3 (q_norm/k_norm).

transformers' ``LlamaForCausalLM`` tree: ``model.{embed_tokens, layers[i].{self_attn.{q,k,v,o}_proj,
mlp.{gate,up,down}_proj, mlp.act_fn, input_layernorm, post_attention_layernorm}, norm,
rotary_emb}``, ``lm_head``. Biases live in the mlx-lm Linears themselves, so qwen2 needs nothing.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn

from . import base


class Attention(base.AttentionModule):
    """Called with keywords only, returns ``(attn_output, attn_weights)`` as transformers does."""

    def __init__(self, src: nn.Module):
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (
            src.q_proj, src.k_proj, src.v_proj, src.o_proj)
        if "q_norm" in src:  # qwen3: RMSNorm over each head, before RoPE
            self.q_norm, self.k_norm = src.q_norm, src.k_norm
        self.num_heads, self.num_key_value_heads = src.n_heads, src.n_kv_heads
        self.scaling = src.scale

    def __call__(self, hidden_states: mx.array, position_embeddings: tuple[mx.array, mx.array],
                 attention_mask: mx.array | None = None, past_key_values: Any = None,
                 **kwargs: Any) -> tuple[mx.array, mx.array | None]:
        B, T, _ = hidden_states.shape
        q = self.q_proj(hidden_states).reshape(B, T, self.num_heads, -1)
        k = self.k_proj(hidden_states).reshape(B, T, self.num_key_value_heads, -1)
        v = base.split_heads(self.v_proj(hidden_states), self.num_key_value_heads)
        if "q_norm" in self:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3)
        cos, sin = position_embeddings
        q, k = base.apply_rotary(q, cos, sin), base.apply_rotary(k, cos, sin)
        if past_key_values is not None:
            k, v = past_key_values.update_and_fetch(k, v)
        attn_output, attn_weights = base.attend(self, q, k, v, attention_mask, self.scaling)
        return self.o_proj(base.merge_heads(attn_output)), attn_weights


class MLP(nn.Module):
    def __init__(self, src: nn.Module, act: str = "silu"):
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = src.gate_proj, src.up_proj, src.down_proj
        self.act_fn = base.ACTIVATIONS[act]()

    def __call__(self, x: mx.array) -> mx.array:
        # Written as transformers writes it, so .source names its operations the same way.
        down_proj = self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))
        return down_proj


class DecoderLayer(nn.Module):
    def __init__(self, src: nn.Module, act: str = "silu"):
        super().__init__()
        self.self_attn = Attention(src.self_attn)
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


class Model(nn.Module):
    """``LlamaModel``: embeddings, decoder layers, final norm and the shared rotary embedding."""

    def __init__(self, src: nn.Module, layers: list[nn.Module], layer_types: list[str],
                 windows: dict[str, int | None], rotary_emb: nn.Module | None = None,
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


def lm_head(src: nn.Module, embedding: nn.Module) -> nn.Module:
    return src.lm_head if "lm_head" in src else base.TiedLMHead(embedding)


def hf_view(src: nn.Module, config: dict) -> nn.Module:
    act = config.get("hidden_act", "silu")
    types, windows = layer_types(config)
    layers = [DecoderLayer(layer, act) for layer in src.model.layers]
    model = Model(src.model, layers, types, windows,
                  rotary_positional=config["model_type"] in ("qwen2", "qwen3"))
    return base.ForCausalLM("model", model, lm_head(src, src.model.embed_tokens), len(layers))
