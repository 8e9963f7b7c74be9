"""``attn_implementation`` ("sdpa" | "eager") against transformers on the same tiny checkpoints.

Reference: transformers 5 itself, loaded and switched the same way (``set_attn_implementation``),
its attention modules' outputs read with forward hooks. Per family (GQA, partial RoPE, query/key
norms, soft-capping, sliding windows) on a left-padded batch: the weights every attention module
returns under "eager", ``None`` under "sdpa", the attention outputs and logits under both, pad rows
included (there transformers' two implementations differ, and so do ours, the same way).
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mlxsight
from mlxsight.adapters.base import AttentionModule
from tiny_models import ARCHS, cached_checkpoint

TOL = 2e-5  # attention weights (probabilities)
VALUE_TOL = 1e-4  # attention outputs and logits
PROMPTS = ["The cat saw a red ball in the park and the dog found it.", "Hello, world!"]
VARIANTS = [(arch, {}) for arch in ARCHS] + [
    ("mistral", {"sliding_window": 4}), ("gemma2", {"sliding_window": 4}), ("gemma3", {"sliding_window": 4}),
    ("gemma3", {"attn_logit_softcapping": 5.0}),  # in its config, never applied by transformers' Gemma 3
]


def _hf(path, attn_implementation=None):
    import torch
    import transformers as tf

    kw = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
    return tf.AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, **kw).eval()


def _attention_paths(model):
    paths = [name for name, m in model._module.named_modules() if isinstance(m, AttentionModule)]
    return sorted(paths, key=lambda p: [int(x) for x in p.split(".") if x.isdigit()])  # forward order


def _envoy(model, path):
    for part in path.split("."):
        model = model[int(part)] if part.isdigit() else getattr(model, part)
    return model


def _padded(model, rows):
    """The batch mlxsight builds from ``rows``: left-padded with the pad id, nnsight's mask and positions."""
    T = max(len(r) for r in rows)
    pad = model.tokenizer.pad_token_id
    ids = np.array([[pad] * (T - len(r)) + list(r) for r in rows])
    mask = np.array([[0] * (T - len(r)) + [1] * len(r) for r in rows])
    return ids, mask, np.maximum(np.cumsum(mask, -1) - 1, 0)


def _ours(model, rows, paths):
    """Every attention module's ``(attn_output, attn_weights)`` and the logits, in one trace."""
    eager = model.attn_implementation == "eager"
    with model.trace(rows):  # one read per module, in forward order (nnsight's rule)
        pairs = [_envoy(model, p).output for p in paths]
        outs = mlxsight.save([pair[0] for pair in pairs])
        weights = mlxsight.save([pair[1] for pair in pairs] if eager else [])
        logits = model.output.logits.save()
    if not eager:  # recorded from the run's structure: transformers' sdpa returns None here too
        with model.trace(rows):
            members = mlxsight.save([_envoy(model, p).output[1] for p in paths])
        assert all(m is None for m in members)
        weights = [None] * len(paths)
    return [np.array(o) for o in outs], [None if w is None else np.array(w) for w in weights], np.array(logits)


def _theirs(hf, ids, mask, positions, paths):
    import torch

    modules, seen = dict(hf.named_modules()), {}
    handles = [modules[p].register_forward_hook(lambda m, a, o, p=p: seen.__setitem__(p, o)) for p in paths]
    try:
        with torch.no_grad():
            logits = hf(torch.tensor(ids), attention_mask=torch.tensor(mask),
                        position_ids=torch.tensor(positions)).logits.numpy()
    finally:
        for h in handles:
            h.remove()
    outs = [seen[p][0].numpy() for p in paths]
    weights = [None if seen[p][1] is None else seen[p][1].numpy() for p in paths]
    return outs, weights, logits


def _diff(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())


@pytest.mark.parametrize("arch, overrides", VARIANTS, ids=lambda v: str(v) if v else "")
def test_both_implementations_match_transformers(arch, overrides):
    path = cached_checkpoint(arch, **overrides)
    ours, hf = mlxsight.LanguageModel(path), _hf(path)
    # the default is what transformers resolves: sdpa, eager for Gemma 2 (no sdpa with soft-capping)
    assert ours.attn_implementation == hf.config._attn_implementation == ("eager" if arch == "gemma2" else "sdpa")
    assert ours.config._attn_implementation == ours.attn_implementation
    paths = _attention_paths(ours)
    assert len(paths) == 4 and set(paths) <= set(dict(hf.named_modules()))
    rows = [ours.tokenizer(p)["input_ids"] for p in PROMPTS]
    ids, mask, positions = _padded(ours, rows)
    results = {}
    for implementation in ("eager", "sdpa"):
        if arch == "gemma2" and implementation == "sdpa":
            with pytest.raises(ValueError, match="scaled_dot_product_attention"):
                hf.set_attn_implementation("sdpa")
            with pytest.raises(ValueError, match="scaled_dot_product_attention"):
                ours.set_attn_implementation("sdpa")
            assert ours.attn_implementation == "eager"
            continue
        hf.set_attn_implementation(implementation)
        ours.set_attn_implementation(implementation)
        assert ours.attn_implementation == ours.config._attn_implementation == implementation
        mine, theirs = _ours(ours, rows, paths), _theirs(hf, ids, mask, positions, paths)
        for (o, w), (to, tw) in zip(zip(*mine[:2]), zip(*theirs[:2])):
            assert _diff(o, to) < VALUE_TOL
            if implementation == "sdpa":
                assert w is None and tw is None
            else:
                assert w.shape == tw.shape == (2, 4, ids.shape[1], ids.shape[1])
                assert _diff(w, tw) < TOL
                assert np.allclose(w.sum(-1), 1, atol=1e-5)
        assert _diff(mine[2], theirs[2]) < VALUE_TOL
        results[implementation] = mine
    if "sdpa" in results:  # the two agree on real tokens (left-pad rows differ, as in transformers)
        real = mask.astype(bool)
        for a, b in zip(results["eager"][0], results["sdpa"][0]):
            assert _diff(a[real], b[real]) < VALUE_TOL
        assert _diff(results["eager"][2][real], results["sdpa"][2][real]) < VALUE_TOL


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def pair(request):
    """An mlxsight model switched to eager and transformers' eager model, same checkpoint."""
    path = cached_checkpoint(request.param)
    return mlxsight.LanguageModel(path, attn_implementation="eager"), _hf(path, "eager")


@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_eager_weights_match_transformers_over_shapes(pair, data):
    ours, hf = pair
    lengths = data.draw(st.lists(st.integers(1, 14), min_size=1, max_size=3), label="lengths")
    seed = data.draw(st.integers(0, 2 ** 16), label="seed")
    rng = np.random.default_rng(seed)
    rows = [rng.integers(2, ours.config.vocab_size, size=n).tolist() for n in lengths]
    paths = _attention_paths(ours)
    _, weights, logits = _ours(ours, rows, paths)
    _, ref, ref_logits = _theirs(hf, *_padded(ours, rows), paths)
    T = max(lengths)
    for w, r in zip(weights, ref):
        assert w.shape == r.shape == (len(rows), hf.config.num_attention_heads, T, T)
        assert _diff(w, r) < TOL
    assert _diff(logits, ref_logits) < VALUE_TOL


def test_unknown_and_unsupported_names_are_refused():
    path = cached_checkpoint("llama")
    with pytest.raises(ValueError, match="flash_attention_2"):
        mlxsight.LanguageModel(path, attn_implementation="flash_attention_2")
    model = mlxsight.LanguageModel(path, attn_implementation="eager")
    assert model._module.config is model.config and model.config._attn_implementation == "eager"
    with pytest.raises(ValueError, match="bogus"):
        model.set_attn_implementation("bogus")
    assert model.attn_implementation == model.config._attn_implementation == "eager"
    assert all(m.attn_implementation == "eager" for m in model._module.modules() if isinstance(m, AttentionModule))
    model.set_attn_implementation(None)  # transformers' None: the default
    assert model.attn_implementation == "sdpa"
    # the plain mlx-lm tree runs mlx-lm's own (sdpa) attention
    plain = mlxsight.LanguageModel(path, view="mlx")
    assert plain.attn_implementation == plain.config._attn_implementation == "sdpa"
    plain.set_attn_implementation("sdpa")
    with pytest.raises(ValueError, match="view='hf'"):
        plain.set_attn_implementation("eager")
    with pytest.raises(ValueError, match="view='hf'"):
        mlxsight.LanguageModel(path, view="mlx", attn_implementation="eager")


def test_generation_under_eager():
    """Generating under eager gives sdpa's tokens; a cached step's weights are the last query row of
    the full forward's over the same tokens and mask (a left-padded prompt: zeros on its pads)."""
    model = mlxsight.LanguageModel(cached_checkpoint("qwen3"))
    prompts = PROMPTS
    with model.generate(prompts, max_new_tokens=4) as tracer:
        sdpa_ids = tracer.result.save()
    model.set_attn_implementation("eager")
    with model.generate(prompts, max_new_tokens=4) as tracer:
        eager_ids = tracer.result.save()
        for step in tracer.iter[3:4]:
            step_weights = model.model.layers[2].self_attn.output[1].save()
    assert np.array_equal(np.array(sdpa_ids), np.array(eager_ids))
    lengths = [len(model.tokenizer(p)["input_ids"]) for p in prompts]
    ids = np.array(eager_ids)[:, :-1]  # what the last step attended over
    mask = np.array([[0] * (max(lengths) - n) + [1] * (ids.shape[1] - max(lengths) + n) for n in lengths])
    with model.trace(input_ids=ids.tolist(), attention_mask=mask.tolist()):
        full = model.model.layers[2].self_attn.output[1].save()
    assert step_weights.shape == (2, 4, 1, ids.shape[1])
    assert _diff(step_weights[:, :, 0], full[:, :, -1]) < TOL
    pads = max(lengths) - min(lengths)
    assert pads > 0 and float(mx.abs(step_weights[1, :, 0, :pads]).max()) == 0.0


def _compat(*args):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    script = root / "tests" / "compat_scripts" / "attn_implementation.py"
    return subprocess.run([sys.executable, "-m", "compat", *args, str(script), str(cached_checkpoint("llama"))],
                          capture_output=True, text=True, timeout=600, env=env, cwd=root)


@pytest.mark.slow  # the default run has nnsight's own test of it (tests/conformance subset)
def test_compat_switching_runs_unchanged():
    """nnsight's TransformersModel API (attn_implementation=, _remoteable_get_env/_set_env) through
    compat on mlxsight: the script's own asserts (env, config, sdpa's None, an unknown name refused)."""
    proc = _compat("run", "--backend", "mlx")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_compat_switching_crosschecks_against_nnsight():
    """The same script on both backends: eager weights, attention output and logits, sdpa's None and
    logits, pad rows included, equal nnsight's."""
    proc = _compat("crosscheck")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "6 values: 6 match, 0 mismatch" in proc.stdout


def test_a_saved_none_reports_only_its_own_name():
    """``output[1].save()`` under sdpa saves ``None``; exit listeners (compat's capture) get that name
    alone, not every variable that already held ``None``."""
    model = mlxsight.LanguageModel(cached_checkpoint("llama"))
    seen = []
    listener = lambda info, values: seen.append(sorted(values))  # noqa: E731
    mlxsight.add_exit_listener(listener)
    try:
        earlier = None
        with model.trace("Hello"):
            weights = mlxsight.save(model.model.layers[0].self_attn.output[1])
    finally:
        mlxsight.remove_exit_listener(listener)
    assert weights is None and earlier is None
    assert seen == [["weights"]]
