"""tools.standardize on every adapted family, in both mlxsight views and on nnsight (transformers).

Checked against the model itself: the parts resolve to the modules named, the sizes equal the
weights' shapes, and ``logits(last layer output)`` equals the model's own logits.
"""

from __future__ import annotations

import numpy as np
import pytest

import mlxsight
from mlxsight import tools
from mlxsight.tools import backend
from tiny_models import ARCHS, cached_checkpoint

PATHS = {  # transformers' tree (HF view and nnsight), then mlx-lm's
    "gpt2": ("transformer.h", "attn", "transformer.wte", "transformer.ln_f", "lm_head"),
    "gpt_neox": ("gpt_neox.layers", "attention", "gpt_neox.embed_in", "gpt_neox.final_layer_norm", "lm_head"),
}
MLX_PATHS = {
    "gpt2": ("model.h", "attn", "model.wte", "model.ln_f", ""),
    "gpt_neox": ("model.h", "attention", "model.embed_in", "model.final_layer_norm", "model.embed_out"),
}
LLAMA_LIKE = ("model.layers", "self_attn", "model.embed_tokens", "model.norm", "lm_head")


def _expected(arch, view, tied):
    table = MLX_PATHS if view == "mlx" else PATHS
    paths = table.get(arch, LLAMA_LIKE)
    if view == "mlx" and arch not in table and tied:
        paths = paths[:4] + ("",)
    return paths


def _check(model, arch, view):
    std = tools.standardize(model)
    cfg = model.config
    tied = std.unembedding is None
    layers, attn, embed, norm, head = _expected(arch, view, tied)
    assert (std.paths["layers"], std.paths["attention"], std.paths["embedding"], std.paths["final_norm"],
            std.paths["unembedding"]) == (layers, attn, embed, norm, head)
    assert std.n_layers == len(std.layers) == len(std.attention) == len(std.mlp) == 4
    assert std.vocab == 512 and std.d_model == 64
    assert std.n_heads == 4 and std.n_kv_heads == (4 if arch in ("gpt2", "gpt_neox") else 2)
    assert std.d_head == 16
    assert std.family == cfg.model_type
    ids = model.tokenizer("The cat saw a red ball in the park.")["input_ids"]
    last, logits = backend.run(model, ids, lambda m: [backend.first(std.layers[-1].output),
                                                      _logits_of(m, view)])
    with backend.no_grad(model):
        ours = backend.to_numpy(std.logits(last))
    ref = backend.to_numpy(logits)
    assert ours.shape == ref.shape and np.abs(ours - ref).max() < 1e-5
    return std


def _logits_of(m, view):
    return m.output if view == "mlx" else m.output.logits


@pytest.mark.parametrize("view", ["hf", "mlx"])
@pytest.mark.parametrize("arch", ARCHS)
def test_mlxsight_views(arch, view):
    model = mlxsight.LanguageModel(cached_checkpoint(arch), view=view)
    std = _check(model, arch, view)
    assert std.backend == "mlx"
    if arch == "gemma2":
        assert std.final_logit_softcap == 30.0


@pytest.mark.parametrize("arch", ARCHS)
def test_nnsight(arch):
    import nnsight
    from transformers import AutoTokenizer

    path = str(cached_checkpoint(arch))
    model = nnsight.LanguageModel(path, tokenizer=AutoTokenizer.from_pretrained(path))
    std = _check(model, arch, "nnsight")
    assert std.backend == "torch"


def test_unknown_architecture_names_what_is_missing():
    import mlx.nn as nn

    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = [nn.Linear(4, 4) for _ in range(2)]
            self.out_norm = nn.RMSNorm(4)

    model = mlxsight.NNsight(Odd())
    with pytest.raises(tools.ArchitectureError) as e:
        tools.standardize(model)
    message = str(e.value)
    for part in ("layers", "embedding", "final_norm", "pass layers='path'"):
        assert part in message
    with pytest.raises(tools.ArchitectureError) as e:
        tools.standardize(model, layers="blocks", final_norm="out_norm")
    assert "\n  layers:" not in str(e.value) and "\n  final_norm:" not in str(e.value)
    assert "\n  embedding:" in str(e.value)


def test_explicit_paths(stories):
    std = tools.standardize(stories, layers="model.layers", attention="self_attn", mlp="mlp",
                            embedding="model.embed_tokens", final_norm="model.norm", n_heads=8)
    assert std.n_layers == 5 and std.n_kv_heads == 4 and std.d_head == 8 and std.tied
    with pytest.raises(tools.ArchitectureError, match="no module at 'model.nope'"):
        tools.standardize(stories, final_norm="model.nope")


def test_not_a_model():
    with pytest.raises(TypeError, match="mlxsight or nnsight model"):
        tools.standardize(object())
