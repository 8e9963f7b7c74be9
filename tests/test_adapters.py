"""HF-view adapters against transformers 5 on the same tiny checkpoints (float32).

Per architecture: module names equal transformers' ``named_modules()``, parameters are the mlx-lm
model's own arrays, logits match transformers within 1e-4, left-padded rows equal solo rows,
KV-cached decoding equals the full forward, and submodules return transformers' structures.
"""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlxsight.adapters import hf_view, supported_architectures
from tiny_models import cached_checkpoint

# tiny_models' names (its gemma3 is transformers' gemma3_text)
ARCHS = ["llama", "mistral", "qwen2", "qwen3", "gpt2", "gemma2", "gemma3", "phi3", "gpt_neox",
         "olmo2"]
TOL = 1e-4


def _load(arch, **overrides):
    import mlx_lm
    path = cached_checkpoint(arch, **overrides)
    model, _ = mlx_lm.load(str(path))
    config = json.loads((path / "config.json").read_text())
    return path, model, config


@pytest.fixture(scope="module", params=ARCHS)
def case(request):
    arch = request.param
    path, src, config = _load(arch)
    root = hf_view(src, config)
    assert root is not None, f"no HF view for {arch}"
    return arch, path, src, config, root


def _hf(path):
    import torch
    import transformers as tf
    torch.manual_seed(0)
    return tf.AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()


def _hf_logits(hf, ids, mask=None, position_ids=None):
    import torch
    kw = {}
    if mask is not None:
        kw["attention_mask"] = torch.tensor(np.array(mask))
    if position_ids is not None:
        kw["position_ids"] = torch.tensor(np.array(position_ids))
    with torch.no_grad():
        return hf(torch.tensor(np.array(ids)), **kw).logits.numpy()


def _ids(shape, vocab, seed=0):
    return mx.array(np.random.default_rng(seed).integers(2, vocab, size=shape), dtype=mx.int32)


def _vocab(config):
    return config["vocab_size"]


def _padded(config):
    """Two rows, the first left-padded by 3; with the nnsight-style mask and positions."""
    ids = _ids((2, 9), _vocab(config), seed=1)
    mask = mx.array([[0, 0, 0] + [1] * 6, [1] * 9], dtype=mx.int32)
    ids = mx.where(mask == 1, ids, 1)  # pad id = eos
    return ids, mask


def test_unknown_model_type_has_no_view():
    assert hf_view(None, {"model_type": "no-such-arch"}) is None
    assert {"llama", "gpt2", "qwen3"} <= set(supported_architectures())


def test_module_names_match_transformers(case):
    arch, path, _, _, root = case
    hf = _hf(path)
    hf_names = {n for n, m in hf.named_modules() if n}
    # ModuleList containers ("model.layers", "transformer.h") carry no computation: in MLX the
    # layers are a plain list, which named_modules() does not list.
    containers = {n for n, m in hf.named_modules() if type(m).__name__ == "ModuleList"}
    ours = [n for n, _ in root.named_modules() if n]
    assert len(ours) == len(set(ours))
    assert set(ours) == hf_names - containers, (sorted(set(ours) ^ (hf_names - containers)))


def test_gpt2_attention_sizes_match_transformers():
    # scripts read them off the module (nnsight's docs: `model.transformer.h[0].attn._module.head_dim`)
    path, src, config = _load("gpt2")
    ours, theirs = hf_view(src, config).transformer.h[0].attn, _hf(path).transformer.h[0].attn
    for name in ("head_dim", "num_heads", "embed_dim", "split_size"):
        assert getattr(ours, name) == getattr(theirs, name), name


def test_parameters_are_mlx_lm_arrays(case):
    _, _, src, _, root = case
    theirs = {id(a) for _, a in tree_flatten(src.parameters())}
    ours = tree_flatten(root.parameters())
    assert ours and all(id(a) in theirs for _, a in ours)
    # every mlx-lm weight is reachable from the view (tied lm_head shares the embedding)
    assert {id(a) for _, a in ours} == theirs


def test_logits_match_transformers(case):
    arch, path, src, config, root = case
    ids = _ids((2, 11), _vocab(config))
    ours = np.array(root(ids).logits)
    ref = _hf_logits(_hf(path), ids)
    diff = np.abs(ours - ref).max()
    print(f"{arch}: max |logits - transformers| = {diff:.2e} (logit scale {np.abs(ref).max():.1f})")
    assert ours.shape == ref.shape and diff <= TOL
    # and the mlx-lm model itself (same arrays, its own modules)
    assert np.abs(ours - np.array(src(ids))).max() <= TOL


def test_inputs_embeds_equal_input_ids(case):
    arch, _, _, config, root = case
    ids = _ids((2, 7), _vocab(config), seed=4)
    modules = dict(root.named_modules())
    embed = next(modules[n] for n in modules
                 if n.split(".")[-1] in ("embed_tokens", "wte", "embed_in"))
    via_embeds = root(inputs_embeds=embed(ids)).logits
    assert np.abs(np.array(via_embeds) - np.array(root(ids).logits)).max() == 0


def test_left_padding_matches_solo_rows_and_transformers(case):
    arch, path, _, config, root = case
    ids, mask = _padded(config)
    out = np.array(root(ids, attention_mask=mask).logits)
    solo = np.array(root(ids[:1, 3:]).logits)
    assert np.abs(out[0, 3:] - solo[0]).max() <= TOL
    full = np.array(root(ids[1:]).logits)
    assert np.abs(out[1] - full[0]).max() <= TOL
    # transformers with the position ids nnsight supplies for left padding
    positions = mx.maximum(mx.cumsum(mask, axis=-1) - 1, 0)
    ref = _hf_logits(_hf(path), ids, mask, positions)
    diff = np.abs(out[0, 3:] - ref[0, 3:]).max()
    print(f"{arch}: padded row vs transformers {diff:.2e}")
    assert diff <= TOL and np.abs(out[1] - ref[1]).max() <= TOL


def test_cached_decoding_equals_full_forward(case):
    _, _, _, config, root = case
    ids = _ids((2, 10), _vocab(config), seed=2)
    full = np.array(root(ids).logits)
    cache = root.make_cache()
    steps = [root(ids[:, :4], cache=cache).logits, root(ids[:, 4:7], cache=cache).logits]
    steps += [root(ids[:, t:t + 1], cache=cache).logits for t in range(7, 10)]
    got = np.concatenate([np.array(s) for s in steps], axis=1)
    assert np.abs(got - full).max() <= TOL


def test_cached_decoding_honours_left_padding(case):
    _, _, _, config, root = case
    ids, mask = _padded(config)
    full = np.array(root(ids, attention_mask=mask).logits)
    cache = root.make_cache()
    steps = [root(ids[:, :6], attention_mask=mask[:, :6], cache=cache).logits]
    for t in range(6, 9):  # only the new token's mask, as a generation loop passes it
        steps.append(root(ids[:, t:t + 1], attention_mask=mask[:, t:t + 1], cache=cache).logits)
    got = np.concatenate([np.array(s) for s in steps], axis=1)
    assert np.abs(got[0, 3:] - full[0, 3:]).max() <= TOL
    assert np.abs(got[1] - full[1]).max() <= TOL


class _Recorder:
    """Swap an instance's class for a subclass that records its calls (as the tracer hooks do)."""

    def __init__(self, module):
        self.calls = []
        calls, cls = self.calls, type(module)

        def __call__(self, *args, **kwargs):
            out = cls.__call__(self, *args, **kwargs)
            calls.append((args, kwargs, out))
            return out

        self.module, self.cls = module, cls
        module.__class__ = type(cls.__name__, (cls,), {"__call__": __call__})

    def restore(self):
        self.module.__class__ = self.cls


def _structure(value):
    """Type, nesting, ``None`` members and shapes of a value, comparable across torch and MLX."""
    if value is None:
        return None
    if isinstance(value, dict):  # ModelOutput
        return {k: _structure(v) for k, v in value.items() if k != "past_key_values"}
    if isinstance(value, (tuple, list)):
        return tuple(_structure(v) for v in value)
    if hasattr(value, "shape"):
        return ("array", tuple(value.shape))
    return type(value).__name__


def _hf_calls(hf, names, ids, mask, positions):
    import torch
    calls = {n: [] for n in names}
    handles = []
    modules = dict(hf.named_modules())
    for n in names:
        def hook(mod, args, kwargs, out, n=n):
            calls[n].append((args, kwargs, out))
        handles.append(modules[n].register_forward_hook(hook, with_kwargs=True))
    try:
        with torch.no_grad():
            out = hf(torch.tensor(np.array(ids)), attention_mask=torch.tensor(np.array(mask)),
                     position_ids=torch.tensor(np.array(positions)))
    finally:
        for h in handles:
            h.remove()
    return calls, out


def _probe_paths(root):
    """Layer 0's modules (all of them), the root's direct modules and lm_head."""
    names = [n for n, _ in root.named_modules() if n]
    first = next(n for n in names if n.endswith(".0"))
    keep = [n for n in names if n == first or n.startswith(first + ".")]
    keep += [n for n in names if n.count(".") == 1 and ".0" not in n and "." in n]
    backbone = next(n for n in names if n in ("model", "transformer", "gpt_neox"))
    return keep + [backbone, "lm_head"]


def test_call_conventions_and_structures_match_transformers(case):
    """Each module is called as transformers calls it (positional count, keyword names) and
    returns the same structure (tuples, ``None`` members, shapes): checked with torch hooks."""
    arch, path, _, config, root = case
    ids, mask = _padded(config)
    positions = mx.maximum(mx.cumsum(mask, axis=-1) - 1, 0)
    names = _probe_paths(root)
    hf_calls, hf_out = _hf_calls(_hf(path), names, ids, mask, positions)
    modules = dict(root.named_modules())
    recs = {n: _Recorder(modules[n]) for n in names}
    try:
        out = root(ids, attention_mask=mask, position_ids=positions)
    finally:
        for r in recs.values():
            r.restore()
    checked = 0
    for n in names:
        ours, theirs = recs[n].calls, hf_calls[n]
        assert len(ours) == len(theirs), (n, len(ours), len(theirs))
        for (a, kw, o), (ta, tkw, to) in zip(ours, theirs):
            assert len(a) == len(ta), (n, "positional args", len(a), len(ta))
            assert set(kw) == set(tkw), (n, sorted(kw), sorted(tkw))
            assert _structure(o) == _structure(to), (n, _structure(o), _structure(to))
            checked += 1
    assert checked >= 6
    assert type(out).__name__ == "CausalLMOutputWithPast" and out["logits"] is out.logits
    (_, _, logits), = recs["lm_head"].calls
    if config.get("final_logit_softcapping") is None:
        assert out.logits is logits  # as in transformers: model.output.logits is lm_head.output
    assert _structure(out.logits) == _structure(hf_out.logits)


def test_rotary_embedding_matches_transformers(case):
    arch, path, _, config, root = case
    modules = dict(root.named_modules())
    name = next((n for n in modules if n.endswith("rotary_emb")), None)
    if name is None:
        assert arch == "gpt2"  # learned positions, no rotary module in transformers either
        return
    import torch
    hf_rot = dict(_hf(path).named_modules())[name]
    positions = mx.array([[0, 0, 0, 1, 2, 3], [0, 1, 2, 3, 4, 5]])
    x = mx.zeros((2, 6, 8))
    kinds = [()] if arch != "gemma3" else [("full_attention",), ("sliding_attention",)]
    for kind in kinds:  # gemma3: one frequency set per layer type
        ours = modules[name](x, positions, *kind)
        with torch.no_grad():
            ref = hf_rot(torch.zeros(2, 6, 8), torch.tensor(np.array(positions)), *kind)
        assert isinstance(ours, tuple) and len(ours) == 2
        for a, b in zip(ours, ref):
            assert a.shape == tuple(b.shape)
            assert np.abs(np.array(a) - b.numpy()).max() <= 1e-5


LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 8}
VARIANTS = [
    ("mistral", dict(sliding_window=4)),       # every layer sliding, window < sequence
    ("gemma2", dict(sliding_window=4)),        # alternating sliding / full layers
    ("gemma3", dict(sliding_window=4)),
    ("qwen3", dict(tie_word_embeddings=True)),  # tied lm_head on the llama path
    ("llama", dict(rope_parameters=LLAMA3_ROPE)),
    ("llama", dict(rope_parameters={"rope_type": "linear", "rope_theta": 10000.0,
                                    "factor": 2.0})),
    ("gpt_neox", dict(use_parallel_residual=False)),
]


@pytest.mark.parametrize("arch, overrides", VARIANTS, ids=lambda v: str(v))
def test_config_variants_match_transformers(arch, overrides):
    path, src, config = _load(arch, **overrides)
    root = hf_view(src, config)
    hf = _hf(path)
    ids = _ids((2, 11), _vocab(config))
    ours = np.array(root(ids).logits)
    diff = np.abs(ours - _hf_logits(hf, ids)).max()
    print(f"{arch} {overrides}: max |logits - transformers| = {diff:.2e}")
    assert diff <= TOL
    padded, mask = _padded(config)
    positions = mx.maximum(mx.cumsum(mask, axis=-1) - 1, 0)
    out = np.array(root(padded, attention_mask=mask).logits)
    ref = _hf_logits(hf, padded, mask, positions)
    assert np.abs(out[0, 3:] - ref[0, 3:]).max() <= TOL and np.abs(out[1] - ref[1]).max() <= TOL
    cache = root.make_cache()
    steps = [root(padded[:, :5], attention_mask=mask[:, :5], cache=cache).logits]
    # here the whole mask so far, as transformers' generate passes it
    steps += [root(padded[:, t:t + 1], attention_mask=mask[:, :t + 1], cache=cache).logits
              for t in range(5, 9)]
    got = np.concatenate([np.array(s) for s in steps], axis=1)
    assert np.abs(got[0, 3:] - out[0, 3:]).max() <= TOL and np.abs(got[1] - out[1]).max() <= TOL


def test_stories260k_matches_transformers(stories_path):
    """A real (tied) Llama checkpoint, loaded by mlx_lm.load."""
    import mlx_lm
    src, _ = mlx_lm.load(str(stories_path))
    config = json.loads((stories_path / "config.json").read_text())
    root = hf_view(src, config)
    assert type(root.lm_head).__name__ == "TiedLMHead"
    assert root.lm_head.weight is root.model.embed_tokens.weight
    ids = _ids((1, 24), config["vocab_size"], seed=3)
    ours = np.array(root(ids).logits)
    ref = np.array(src(ids))
    hf_diff = np.abs(ours - _hf_logits(_hf(stories_path), ids)).max()
    print(f"stories260k: vs transformers {hf_diff:.2e}, vs mlx-lm {np.abs(ours - ref).max():.2e}")
    assert hf_diff <= TOL and np.abs(ours - ref).max() <= TOL


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma2", "qwen3"])
def test_quantized_model_view_equals_mlx_lm(arch):
    """mlx-community checkpoints are quantized: the view reuses QuantizedLinear/QuantizedEmbedding."""
    import mlx.nn as nn
    _, src, config = _load(arch)
    nn.quantize(src, group_size=32, bits=8)
    root = hf_view(src, config)
    assert any(type(m).__name__ == "QuantizedLinear" for _, m in root.named_modules())
    ids = _ids((2, 9), _vocab(config), seed=5)
    diff = np.abs(np.array(root(ids).logits) - np.array(src(ids))).max()
    print(f"{arch} 8-bit: view vs mlx-lm {diff:.2e}")
    assert diff <= TOL
