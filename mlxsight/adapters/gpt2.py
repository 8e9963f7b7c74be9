"""HF view of GPT-2: ``transformer.{wte, wpe, drop, h[i].{ln_1, attn.{c_attn, c_proj, attn_dropout,
resid_dropout}, ln_2, mlp.{c_fc, act, c_proj, dropout}}, ln_f}``, ``lm_head`` (tied to ``wte``).

transformers' ``Conv1D`` stores weights ``[in, out]``; mlx-lm transposed them into ``nn.Linear``
(``[out, in]``) at load, and the view keeps mlx-lm's arrays, so ``c_attn.weight`` reads transposed.
"""

from __future__ import annotations

from typing import Any, Callable

import mlx.core as mx
import mlx.nn as mnn

from . import base
from .base import ALL_ATTENTION_FUNCTIONS
from .torch_names import nn, torch


def eager_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers' GPT-2 ``eager_attention_forward``, line for line: ``(attn_output [B, T, H, hd],
    attn_weights [B, H, T, S])``; ``attention_mask`` is additive (``base.eager_mask``)."""
    if scaling is None:
        scaling = query.shape[-1] ** -0.5

    attn_weights = torch.matmul(query, key.transpose(0, 1, 3, 2)) * scaling

    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask

    attn_weights = nn.functional.softmax(attn_weights, dim=-1)

    # Downcast (if necessary) back to V's dtype (if in mixed-precision) -- No-Op otherwise
    attn_weights = attn_weights.astype(value.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)

    attn_output = torch.matmul(attn_weights, value)
    attn_output = attn_output.transpose(0, 2, 1, 3)

    return attn_output, attn_weights


class Attention(base.AttentionModule):
    """transformers' ``GPT2Attention``: its forward is transformers' statement for statement, so
    ``.source`` names the same operations (``attention_interface_1`` is the attention call). MLX
    spells three things differently: ``reshape`` for ``view``, ``transpose`` with all axes, no
    ``contiguous``; the cache is the layer's mlx-lm ``KVCache`` (``update_and_fetch``)."""

    def __init__(self, src: mnn.Module, config: dict):
        super().__init__()
        self.c_attn, self.c_proj = src.c_attn, src.c_proj
        self.attn_dropout = base.Dropout(config.get("attn_pdrop", 0.0))
        self.resid_dropout = base.Dropout(config.get("resid_pdrop", 0.0))
        self.num_heads, self.scaling = src.n_head, src.scale
        # transformers' GPT2Attention sizes, which scripts read (nnsight's docs: `attn._module.head_dim`)
        self.embed_dim = self.split_size = src.n_embd
        self.head_dim = src.head_dim
        self.reorder_and_upcast_attn = bool(config.get("reorder_and_upcast_attn", False))
        self.is_cross_attention = False
        self.is_causal = True

    def _upcast_and_reordered_attn(self, query, key, value, attention_mask=None):
        """transformers' float32 path (``reorder_and_upcast_attn``): the eager weights in float32."""
        attn_output, attn_weights = eager_attention_forward(
            self, query.astype(mx.float32), key.astype(mx.float32), value, attention_mask, self.scaling)
        return attn_output.astype(value.dtype), attn_weights

    def __call__(
        self,
        hidden_states: mx.array | None,
        past_key_values: Any = None,
        attention_mask: mx.array | None = None,
        encoder_hidden_states: mx.array | None = None,
        encoder_attention_mask: mx.array | None = None,
        output_attentions: bool | None = False,
        **kwargs: Any,
    ) -> tuple[mx.array, mx.array | None]:
        is_cross_attention = encoder_hidden_states is not None
        if past_key_values is not None:
            is_updated = False  # mlx-lm's caches hold no cross-attention keys
            curr_past_key_values = past_key_values

        if is_cross_attention:
            if not hasattr(self, "q_attn"):
                raise ValueError(
                    "If class is used as cross attention, the weights `q_attn` have to be defined. "
                    "Please make sure to instantiate class with `GPT2Attention(..., is_cross_attention=True)`."
                )
            query_states = self.q_attn(hidden_states)
            attention_mask = encoder_attention_mask

            # Try to get key/value states from cache if possible
            if past_key_values is not None and is_updated:
                key_states = curr_past_key_values.keys
                value_states = curr_past_key_values.values
            else:
                key_states, value_states = self.c_attn(encoder_hidden_states).split(2, axis=2)
                shape_kv = (*key_states.shape[:-1], -1, self.head_dim)
                key_states = key_states.reshape(shape_kv).transpose(0, 2, 1, 3)
                value_states = value_states.reshape(shape_kv).transpose(0, 2, 1, 3)
        else:
            query_states, key_states, value_states = self.c_attn(hidden_states).split(3, axis=2)
            shape_kv = (*key_states.shape[:-1], -1, self.head_dim)
            key_states = key_states.reshape(shape_kv).transpose(0, 2, 1, 3)
            value_states = value_states.reshape(shape_kv).transpose(0, 2, 1, 3)

        shape_q = (*query_states.shape[:-1], -1, self.head_dim)
        query_states = query_states.reshape(shape_q).transpose(0, 2, 1, 3)

        if (past_key_values is not None and not is_cross_attention) or (
            past_key_values is not None and is_cross_attention and not is_updated
        ):
            key_states, value_states = curr_past_key_values.update_and_fetch(key_states, value_states)

        using_eager = self.attn_implementation == "eager"
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.attn_implementation, eager_attention_forward
        )

        if using_eager and self.reorder_and_upcast_attn:
            attn_output, attn_weights = self._upcast_and_reordered_attn(
                query_states, key_states, value_states, attention_mask
            )
        else:
            attn_output, attn_weights = attention_interface(
                self,
                query_states,
                key_states,
                value_states,
                attention_mask,
                dropout=self.attn_dropout.p if self.training else 0.0,
                scaling=self.scaling,
                **kwargs,
            )

        attn_output = attn_output.reshape(*attn_output.shape[:-2], -1)
        attn_output = self.c_proj(attn_output)
        attn_output = self.resid_dropout(attn_output)

        return attn_output, attn_weights


class MLP(mnn.Module):
    def __init__(self, src: mnn.Module, act: str, config: dict):
        super().__init__()
        self.c_fc, self.c_proj = src.c_fc, src.c_proj
        self.act = base.ACTIVATIONS[act]()
        self.dropout = base.Dropout(config.get("resid_pdrop", 0.0))

    def __call__(self, hidden_states: mx.array) -> mx.array:
        return self.dropout(self.c_proj(self.act(self.c_fc(hidden_states))))


class Block(mnn.Module):
    def __init__(self, src: mnn.Module, act: str, config: dict):
        super().__init__()
        self.ln_1, self.attn, self.ln_2 = src.ln_1, Attention(src.attn, config), src.ln_2
        self.mlp = MLP(src.mlp, act, config)

    def __call__(self, hidden_states: mx.array, past_key_values: Any = None,
                 attention_mask: mx.array | None = None, encoder_hidden_states: Any = None,
                 encoder_attention_mask: Any = None, use_cache: bool | None = False,
                 **kwargs: Any) -> mx.array:
        residual = hidden_states
        attn_output, attn_weights = self.attn(self.ln_1(hidden_states), past_key_values=past_key_values,
                                   attention_mask=attention_mask, use_cache=use_cache, **kwargs)
        base.capture_attentions(attn_weights)  # output_attentions=True collects them
        hidden_states = attn_output + residual
        residual = hidden_states
        return residual + self.mlp(self.ln_2(hidden_states))


class GPT2Model(base.UsesAttnImplementation):
    def __init__(self, src: mnn.Module, act: str, config: dict):
        super().__init__()
        self.wte, self.wpe = src.wte, src.wpe
        self.drop = base.Dropout(config.get("embd_pdrop", 0.0))
        self.h = [Block(layer, act, config) for layer in src.h]
        self.ln_f = src.ln_f

    def __call__(self, input_ids: mx.array | None = None, past_key_values: list | None = None,
                 attention_mask: mx.array | None = None, token_type_ids: mx.array | None = None,
                 position_ids: mx.array | None = None, inputs_embeds: mx.array | None = None,
                 encoder_hidden_states: Any = None, encoder_attention_mask: Any = None,
                 use_cache: bool | None = None, **kwargs: Any):
        if inputs_embeds is None:
            inputs_embeds = self.wte(input_ids)
        position_ids, masks = base.prepare_inputs(inputs_embeds, attention_mask, position_ids,
                                                  past_key_values, {"full_attention": None})
        hidden_states = inputs_embeds + self.wpe(position_ids)
        if token_type_ids is not None:
            hidden_states = hidden_states + self.wte(token_type_ids)
        hidden_states = self.drop(hidden_states)
        causal_mask = masks["full_attention"]
        if self.attn_implementation == "eager":  # transformers' eager mask: additive, always there
            T = inputs_embeds.shape[1]
            causal_mask = base.eager_mask(causal_mask, T, T + (past_key_values[0].offset if past_key_values else 0),
                                          inputs_embeds.dtype)
        caches = past_key_values or [None] * len(self.h)
        for block, layer_cache in zip(self.h, caches):
            # transformers passes the first four positionally
            hidden_states = block(hidden_states, layer_cache, causal_mask, None,
                                  encoder_attention_mask=None, use_cache=use_cache,
                                  position_ids=position_ids)
        return base.backbone_output(self.ln_f(hidden_states), past_key_values)


def hf_view(src: mnn.Module, config: dict) -> mnn.Module:
    act = config.get("activation_function", "gelu_new")
    transformer = GPT2Model(src.model, act, config)
    return base.ForCausalLM("transformer", transformer, base.TiedLMHead(src.model.wte),
                            len(transformer.h), ids_positional=True,
                            extra_keywords=("token_type_ids", "encoder_hidden_states",
                                            "encoder_attention_mask"))
