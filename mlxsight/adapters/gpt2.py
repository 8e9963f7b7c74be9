"""HF view of GPT-2: ``transformer.{wte, wpe, drop, h[i].{ln_1, attn.{c_attn, c_proj, attn_dropout,
resid_dropout}, ln_2, mlp.{c_fc, act, c_proj, dropout}}, ln_f}``, ``lm_head`` (tied to ``wte``).

transformers' ``Conv1D`` stores weights ``[in, out]``; mlx-lm transposed them into ``nn.Linear``
(``[out, in]``) at load, and the view keeps mlx-lm's arrays, so ``c_attn.weight`` reads transposed.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn

from . import base


class Attention(base.AttentionModule):
    """Called as transformers does (``hidden_states`` positional); returns ``(out, weights)``."""

    def __init__(self, src: nn.Module):
        super().__init__()
        self.c_attn, self.c_proj = src.c_attn, src.c_proj
        self.attn_dropout, self.resid_dropout = base.Dropout(), base.Dropout()
        self.num_heads, self.scaling = src.n_head, src.scale
        # transformers' GPT2Attention sizes, which scripts read (nnsight's docs: `attn._module.head_dim`)
        self.embed_dim = self.split_size = src.n_embd
        self.head_dim = src.head_dim

    def __call__(self, hidden_states: mx.array, past_key_values: Any = None,
                 attention_mask: mx.array | None = None,
                 **kwargs: Any) -> tuple[mx.array, mx.array | None]:
        q, k, v = mx.split(self.c_attn(hidden_states), 3, axis=-1)
        q, k, v = (base.split_heads(t, self.num_heads) for t in (q, k, v))
        if past_key_values is not None:
            k, v = past_key_values.update_and_fetch(k, v)
        attn_output, attn_weights = base.attend(self, q, k, v, attention_mask, self.scaling)
        return self.resid_dropout(self.c_proj(base.merge_heads(attn_output))), attn_weights


class MLP(nn.Module):
    def __init__(self, src: nn.Module, act: str):
        super().__init__()
        self.c_fc, self.c_proj = src.c_fc, src.c_proj
        self.act = base.ACTIVATIONS[act]()
        self.dropout = base.Dropout()

    def __call__(self, hidden_states: mx.array) -> mx.array:
        return self.dropout(self.c_proj(self.act(self.c_fc(hidden_states))))


class Block(nn.Module):
    def __init__(self, src: nn.Module, act: str):
        super().__init__()
        self.ln_1, self.attn, self.ln_2 = src.ln_1, Attention(src.attn), src.ln_2
        self.mlp = MLP(src.mlp, act)

    def __call__(self, hidden_states: mx.array, past_key_values: Any = None,
                 attention_mask: mx.array | None = None, encoder_hidden_states: Any = None,
                 encoder_attention_mask: Any = None, use_cache: bool | None = False,
                 **kwargs: Any) -> mx.array:
        residual = hidden_states
        attn_output, _ = self.attn(self.ln_1(hidden_states), past_key_values=past_key_values,
                                   attention_mask=attention_mask, use_cache=use_cache, **kwargs)
        hidden_states = attn_output + residual
        residual = hidden_states
        return residual + self.mlp(self.ln_2(hidden_states))


class GPT2Model(nn.Module):
    def __init__(self, src: nn.Module, act: str):
        super().__init__()
        self.wte, self.wpe = src.wte, src.wpe
        self.drop = base.Dropout()
        self.h = [Block(layer, act) for layer in src.h]
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
        caches = past_key_values or [None] * len(self.h)
        for block, layer_cache in zip(self.h, caches):
            # transformers passes the first four positionally
            hidden_states = block(hidden_states, layer_cache, masks["full_attention"], None,
                                  encoder_attention_mask=None, use_cache=use_cache,
                                  position_ids=position_ids)
        return base.backbone_output(self.ln_f(hidden_states), past_key_values)


def hf_view(src: nn.Module, config: dict) -> nn.Module:
    act = config.get("activation_function", "gelu_new")
    transformer = GPT2Model(src.model, act)
    return base.ForCausalLM("transformer", transformer, base.TiedLMHead(src.model.wte),
                            len(transformer.h), ids_positional=True,
                            extra_keywords=("token_type_ids", "encoder_hidden_states",
                                            "encoder_attention_mask"))
