"""HF view of GPT-NeoX (Pythia): ``gpt_neox.{embed_in, emb_dropout, layers[i].{input_layernorm,
post_attention_layernorm, post_attention_dropout, post_mlp_dropout, attention.{query_key_value,
dense}, mlp.{dense_h_to_4h, dense_4h_to_h, act}}, final_layer_norm, rotary_emb}``, ``lm_head``.

mlx-lm keeps the output matrix as ``model.embed_out``; transformers 5 names it ``lm_head``.
Attention gets the cache as ``layer_past`` and ``hidden_states`` positionally, as in transformers.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn

from . import base


class Attention(base.AttentionModule):
    def __init__(self, src: nn.Module):
        super().__init__()
        self.query_key_value, self.dense = src.query_key_value, src.dense
        self.num_heads, self.scaling = src.num_attention_heads, src.scale

    def __call__(self, hidden_states: mx.array, attention_mask: mx.array | None,
                 layer_past: Any = None,
                 position_embeddings: tuple[mx.array, mx.array] | None = None,
                 **kwargs: Any) -> tuple[mx.array, mx.array | None]:
        # [B, T, H, 3 * hd] -> [B, H, T, 3 * hd], then q | k | v along the last axis
        qkv = base.split_heads(self.query_key_value(hidden_states), self.num_heads)
        q, k, v = mx.split(qkv, 3, axis=-1)
        cos, sin = position_embeddings
        q, k = base.apply_rotary(q, cos, sin), base.apply_rotary(k, cos, sin)
        if layer_past is not None:
            k, v = layer_past.update_and_fetch(k, v)
        attn_output, attn_weights = base.attend(self, q, k, v, attention_mask, self.scaling)
        return self.dense(base.merge_heads(attn_output)), attn_weights


class MLP(nn.Module):
    def __init__(self, src: nn.Module, act: str):
        super().__init__()
        self.dense_h_to_4h, self.dense_4h_to_h = src.dense_h_to_4h, src.dense_4h_to_h
        self.act = base.ACTIVATIONS[act]()

    def __call__(self, hidden_states: mx.array) -> mx.array:
        return self.dense_4h_to_h(self.act(self.dense_h_to_4h(hidden_states)))


class Layer(nn.Module):
    def __init__(self, src: nn.Module, act: str):
        super().__init__()
        self.use_parallel_residual = src.use_parallel_residual
        self.input_layernorm = src.input_layernorm
        self.post_attention_layernorm = src.post_attention_layernorm
        self.post_attention_dropout, self.post_mlp_dropout = base.Dropout(), base.Dropout()
        self.attention = Attention(src.attention)
        self.mlp = MLP(src.mlp, act)

    def __call__(self, hidden_states: mx.array, attention_mask: mx.array | None = None,
                 position_ids: mx.array | None = None, use_cache: bool | None = False,
                 layer_past: Any = None,
                 position_embeddings: tuple[mx.array, mx.array] | None = None,
                 **kwargs: Any) -> mx.array:
        attn_output, attn_weights = self.attention(
            self.input_layernorm(hidden_states), attention_mask=attention_mask,
            position_ids=position_ids, layer_past=layer_past, use_cache=use_cache,
            position_embeddings=position_embeddings, **kwargs)
        base.capture_attentions(attn_weights)  # output_attentions=True collects them
        attn_output = self.post_attention_dropout(attn_output)
        if self.use_parallel_residual:
            mlp_output = self.mlp(self.post_attention_layernorm(hidden_states))
            return self.post_mlp_dropout(mlp_output) + attn_output + hidden_states
        attn_output = attn_output + hidden_states
        mlp_output = self.post_mlp_dropout(self.mlp(self.post_attention_layernorm(attn_output)))
        return mlp_output + attn_output


class GPTNeoXModel(nn.Module):
    def __init__(self, src: nn.Module, act: str):
        super().__init__()
        self.embed_in = src.embed_in
        self.emb_dropout = base.Dropout()
        self.layers = [Layer(layer, act) for layer in src.h]
        self.final_layer_norm = src.final_layer_norm
        self.rotary_emb = base.RotaryEmbedding.from_mlx(src.h[0].attention.rope)

    def __call__(self, input_ids: mx.array | None = None, attention_mask: mx.array | None = None,
                 position_ids: mx.array | None = None, past_key_values: list | None = None,
                 inputs_embeds: mx.array | None = None, use_cache: bool | None = None,
                 **kwargs: Any):
        if inputs_embeds is None:
            inputs_embeds = self.embed_in(input_ids)
        position_ids, masks = base.prepare_inputs(inputs_embeds, attention_mask, position_ids,
                                                  past_key_values, {"full_attention": None})
        hidden_states = self.emb_dropout(inputs_embeds)
        position_embeddings = self.rotary_emb(hidden_states, position_ids=position_ids)
        caches = past_key_values or [None] * len(self.layers)
        for layer, layer_cache in zip(self.layers, caches):
            hidden_states = layer(hidden_states, attention_mask=masks["full_attention"],
                                  position_ids=position_ids, layer_past=layer_cache,
                                  use_cache=use_cache, position_embeddings=position_embeddings,
                                  **kwargs)
        return base.backbone_output(self.final_layer_norm(hidden_states), past_key_values)


def hf_view(src: nn.Module, config: dict) -> nn.Module:
    # transformers follows hidden_act (Pythia: exact "gelu"); mlx-lm always uses the tanh GELU,
    # which is the fallback when the config does not say.
    gpt_neox = GPTNeoXModel(src.model, config.get("hidden_act", "gelu_new"))
    return base.ForCausalLM("gpt_neox", gpt_neox, src.model.embed_out, len(gpt_neox.layers),
                            ids_positional=True)
