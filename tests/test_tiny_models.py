"""The tiny checkpoints load in mlx-lm and transformers alike: same logits, same token ids."""

import functools

import mlx.core as mx  # (mlx before transformers, always)
import mlx_lm
import numpy as np
import pytest
import torch
from tokenizers import Tokenizer
from mlx_lm.models.cache import BatchKVCache
from transformers import AutoModelForCausalLM, AutoTokenizer

import tiny_models

PROMPTS = ["Once upon a time, the little girl saw a red ball.",
           "Zebras don't like 42 purple umbrellas in Zürich!"]
TEXTS = PROMPTS + ["", " leading space", "tabs\tand\nnewlines", "émoji 🙂 and CJK 漢字"]
TOL = 1e-4


@functools.lru_cache(maxsize=None)
def load_both(path):
    mlx_model, mlx_tok = mlx_lm.load(str(path))
    hf_model, info = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
    assert not any(info.values()), f"transformers loading info: {info}"
    return mlx_model, mlx_tok, hf_model.eval()


def logits_both(mlx_model, hf_model, ids):
    mlx_logits = np.array(mlx_model(mx.array(ids)))
    with torch.no_grad():
        hf_logits = hf_model(torch.tensor(ids)).logits.numpy()
    return mlx_logits, hf_logits


def batch_ids(tokenizer):
    """A 2x7 batch of real token ids (bos first)."""
    rows = [tokenizer(p).input_ids[:7] for p in PROMPTS]
    assert all(len(r) == 7 for r in rows)
    return rows


@pytest.mark.parametrize("arch", tiny_models.ARCHS)
def test_same_logits_and_ids(arch, record_property):
    path = tiny_models.cached_checkpoint(arch)
    mlx_model, mlx_tok, hf_model = load_both(path)
    hf_tok = AutoTokenizer.from_pretrained(path)

    reference = Tokenizer.from_file(str(path / "tokenizer.json"))
    for text in TEXTS:
        assert mlx_tok.encode(text) == hf_tok(text).input_ids == reference.encode(text).ids, text
    assert len(hf_tok) == hf_model.config.vocab_size and hf_tok.pad_token is None
    assert mlx_tok.eos_token_id == hf_tok.eos_token_id == hf_model.config.eos_token_id

    ids = batch_ids(hf_tok)
    mlx_logits, hf_logits = logits_both(mlx_model, hf_model, ids)
    assert mlx_logits.shape == hf_logits.shape == (2, 7, len(hf_tok))
    assert hf_logits.std() > 0.5  # random weights that actually move the logits
    diff = float(np.abs(mlx_logits - hf_logits).max())
    record_property("max_logit_diff", diff)
    print(f"{arch}: max |logits diff| = {diff:.2e} (max |logit| {np.abs(hf_logits).max():.1f})")
    assert diff <= TOL


@pytest.mark.parametrize("arch", ["llama", "gemma3", "qwen3"])
def test_tied_override(arch):
    path = tiny_models.cached_checkpoint(arch, tie_word_embeddings=True, num_hidden_layers=2)
    mlx_model, mlx_tok, hf_model = load_both(path)
    assert "lm_head" not in dict(mlx_model.named_modules())
    assert hf_model.lm_head.weight.data_ptr() == hf_model.get_input_embeddings().weight.data_ptr()
    assert len(hf_model.model.layers) == len(mlx_model.layers) == 2
    mlx_logits, hf_logits = logits_both(mlx_model, hf_model, batch_ids(mlx_tok._tokenizer))
    assert np.abs(mlx_logits - hf_logits).max() <= TOL


@pytest.mark.parametrize("arch", ["gpt2", "gemma2"])
def test_untied_where_mlx_cannot(arch, tmp_path):
    with pytest.raises(ValueError, match="cannot express"):
        tiny_models.build_checkpoint(arch, tmp_path, tie_word_embeddings=False)


def test_cache_and_seed(tmp_path):
    first = tiny_models.cached_checkpoint("llama", root=tmp_path, num_hidden_layers=1)
    assert tiny_models.cached_checkpoint("llama", root=tmp_path, num_hidden_layers=1) == first
    other = tiny_models.cached_checkpoint("llama", root=tmp_path, num_hidden_layers=1, seed=1)
    assert other != first
    again = tiny_models.build_checkpoint("llama", tmp_path / "again", num_hidden_layers=1)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (again / name).read_bytes() == (first / name).read_bytes(), name
    assert (other / "model.safetensors").read_bytes() != (first / "model.safetensors").read_bytes()


def test_tokenizer_conventions(tmp_path):
    """Llama-like: bos prepended, eos set, pad unset; nnsight-style loaders then pad with eos."""
    tok = AutoTokenizer.from_pretrained(tiny_models.build_tokenizer(tmp_path))
    ids = tok("The cat").input_ids
    assert ids[0] == tok.bos_token_id == 0 and tok.eos_token_id == 1 and tok.pad_token is None
    assert tok.decode(ids, skip_special_tokens=True) == "The cat"
    tok.pad_token, tok.padding_side = tok.eos_token, "left"
    batch = tok(["The cat", "A dog ran away"], padding=True).input_ids
    assert batch[0][0] == tok.eos_token_id and batch[1][0] == tok.bos_token_id


# Configurations transformers runs and mlx-lm 0.32.2 cannot reproduce (checked in its model files).
LIMITS = {
    "gemma2-sliding": ("gemma2", dict(sliding_window=4),
                       "mlx-lm's gemma2 has no sliding-window attention: every layer sees the "
                       "whole prefix, so sequences longer than sliding_window differ"),
    "mistral-sliding": ("mistral", dict(sliding_window=4),
                        "mlx-lm runs mistral as llama, which ignores sliding_window unless "
                        "layer_types is given and needs at least one full_attention layer"),
    "neox-exact-gelu": ("gpt_neox", dict(hidden_act="gelu"),
                        "mlx-lm's gpt_neox hard-codes the tanh GELU (nn.gelu_approx); Pythia's "
                        "exact 'gelu' differs by ~1e-3 in the logits"),
    "gemma3-embed-scale": ("gemma3", dict(hidden_size=72),
                           "mlx-lm's gemma3_text rounds the embedding scale sqrt(hidden_size) to "
                           "bfloat16 (8.485 -> 8.5); transformers keeps it in float32"),
}


@pytest.mark.parametrize("case", [pytest.param(k, marks=pytest.mark.xfail(reason=v[2], strict=True))
                                  for k, v in LIMITS.items()])
def test_library_limits(case):
    arch, overrides, _ = LIMITS[case]
    path = tiny_models.cached_checkpoint(arch, num_hidden_layers=2, **overrides)
    mlx_model, mlx_tok, hf_model = load_both(path)
    mlx_logits, hf_logits = logits_both(mlx_model, hf_model, batch_ids(mlx_tok._tokenizer))
    assert np.abs(mlx_logits - hf_logits).max() <= TOL


GEMMA2_MASK = ("mlx-lm's gemma2 attention reshapes GQA scores to [B, kv, rep, L, L] and adds a "
               "per-row [B, 1, L, L] mask unchanged, so B broadcasts against the kv-head axis")


@pytest.mark.parametrize("arch", [
    pytest.param(a, marks=pytest.mark.xfail(reason=GEMMA2_MASK, strict=True)) if a == "gemma2"
    else a for a in tiny_models.ARCHS])
def test_left_padding(arch):
    """mlx-lm's own BatchKVCache left padding == transformers with mask and nnsight's positions."""
    path = tiny_models.cached_checkpoint(arch)
    mlx_model, mlx_tok, hf_model = load_both(path)
    short, long = (mlx_tok.encode(p) for p in ("The cat", PROMPTS[0]))
    pad = len(long) - len(short)
    ids = [[mlx_tok.eos_token_id] * pad + short, long]
    mask = torch.tensor([[0] * pad + [1] * len(short), [1] * len(long)])
    cache = [BatchKVCache([pad, 0]) for _ in mlx_model.layers]
    mlx_logits = np.array(mlx_model(mx.array(ids), cache=cache))
    with torch.no_grad():
        hf_logits = hf_model(torch.tensor(ids), attention_mask=mask,
                             position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits.numpy()
        solo = hf_model(torch.tensor([short])).logits.numpy()
    assert np.abs(hf_logits[0, pad:] - solo[0]).max() <= TOL  # the reference itself is sound
    assert np.abs(mlx_logits[:, pad:] - hf_logits[:, pad:]).max() <= TOL
