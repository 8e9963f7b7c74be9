"""Independent references: an eager, hand-run forward of mlx-lm Llama models with edits applied."""

from __future__ import annotations

from typing import Callable

import mlx.core as mx


def llama_forward(model, ids: mx.array, edit: Callable[[int, mx.array], mx.array] | None = None,
                  edit_input: Callable[[int, mx.array], mx.array] | None = None):
    """Run an mlx-lm Llama layer by layer. Returns (embeddings, [layer outputs], logits)."""
    inner = model.model
    h = inner.embed_tokens(ids)
    emb = h
    mask = "causal" if ids.shape[1] > 1 else None
    outs = []
    for i, layer in enumerate(inner.layers):
        if edit_input is not None:
            h = edit_input(i, h)
        h = layer(h, mask, None)
        if edit is not None:
            h = edit(i, h)
        outs.append(h)
    normed = inner.norm(h)
    logits = inner.embed_tokens.as_linear(normed) if model.args.tie_word_embeddings else model.lm_head(normed)
    return emb, outs, logits


def token_ids(lm, text: str) -> mx.array:
    return mx.array([lm.tokenizer(text)["input_ids"]])
