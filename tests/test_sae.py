"""tools.SAE: loading every format against independent references, and using SAEs in traces.

The SAELens round trips (marked ``saelens``) run SAELens itself in its own venv (built by
``python -m mlxsight.tools.sae_reference_env``) and skip, saying so, when it is missing.
"""

import json
import os

import mlxsight
import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mlxsight.tools import SAE, Site, sae_reference_env
from mlxsight.tools import sae_analysis as A

PROMPT = "Once upon a time, there was a little girl named Lily. She loved to play outside."
SITE = "blocks.2.hook_resid_post"


def random_sae(architecture="standard", d_in=64, d_sae=256, seed=0, **kw):
    rng = np.random.default_rng(seed)
    p = {"W_enc": rng.normal(size=(d_in, d_sae)) / 8, "W_dec": rng.normal(size=(d_sae, d_in)) / 8,
         "b_dec": rng.normal(size=d_in) * 0.1}
    if architecture == "gated":
        p.update(b_gate=rng.normal(size=d_sae) * 0.1, r_mag=rng.normal(size=d_sae) * 0.1,
                 b_mag=rng.normal(size=d_sae) * 0.1)
    else:
        p["b_enc"] = rng.normal(size=d_sae) * 0.1
    if architecture == "jumprelu":
        p["threshold"] = rng.uniform(0, 0.3, size=d_sae)
    params = {k: mx.array(v.astype(np.float32)) for k, v in p.items()}
    return SAE(architecture, params, site=Site.parse(SITE), **kw)


@pytest.fixture(scope="module")
def model(stories_path):
    return mlxsight.LanguageModel(stories_path)


# --- formats --------------------------------------------------------------------------------------

# CI builds the venv (.ci/run), so there a missing venv fails the tests instead of skipping them.
requires_saelens = pytest.mark.skipif(sae_reference_env.python() is None and not os.environ.get("CI"),
                                      reason=sae_reference_env.missing_reason())


@pytest.fixture(scope="module")
def saelens_built(tmp_path_factory):
    out = tmp_path_factory.mktemp("saelens_built")
    sae_reference_env.run("build", str(out), timeout=300)
    return out


SAELENS_CASES = ["standard", "standard_no_b_dec_in", "standard_constant_norm", "standard_layer_norm", "jumprelu",
                 "jumprelu_gemmascope_style", "topk", "topk_rescaled", "gated", "batchtopk_as_jumprelu",
                 "topk_pre6_config"]


@pytest.mark.saelens
@requires_saelens
@pytest.mark.parametrize("case", SAELENS_CASES)
def test_saelens_saved_sae_loads_here_with_the_same_numbers(saelens_built, case):
    d = saelens_built / case
    sae = SAE.load(d)
    x = mx.load(str(d / "inputs.safetensors"))["x"]
    ref = mx.load(str(d / "saelens_outputs.safetensors"))
    assert sae.hook_name == SITE and sae.site.layer == 2
    f = sae.encode(x)
    assert float((f > 0).sum(-1).mean()) > 1  # the comparison is not vacuous
    np.testing.assert_allclose(np.array(f), np.array(ref["encode"]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.array(sae.forward(x)), np.array(ref["forward"]), rtol=1e-5, atol=1e-5)
    if "decode" in ref:
        np.testing.assert_allclose(np.array(sae.decode(ref["encode"])), np.array(ref["decode"]), rtol=1e-5, atol=1e-5)
    folded = d / "saelens_folded_outputs.safetensors"
    if folded.exists():
        ref = mx.load(str(folded))
        ours = SAE.load(d, fold_decoder_norm=True)
        np.testing.assert_allclose(np.linalg.norm(np.array(ours.W_dec), axis=-1), 1.0, rtol=1e-5)
        np.testing.assert_allclose(np.array(ours.encode(x)), np.array(ref["folded_encode"]), rtol=1e-5, atol=1e-5)


@pytest.mark.saelens
@requires_saelens
def test_sae_saved_here_loads_in_saelens_with_the_same_numbers(tmp_path):
    x = mx.array(np.random.default_rng(1).normal(size=(80, 64)).astype(np.float32) * 2)
    saes = {"standard": random_sae("standard"), "jumprelu": random_sae("jumprelu", seed=1),
            "topk": random_sae("topk", seed=2, k=8), "topk_rescaled": random_sae("topk", seed=3, k=8,
                                                                                  rescale_acts_by_decoder_norm=True),
            "gated": random_sae("gated", seed=4), "no_b_dec_in": random_sae("jumprelu", seed=5,
                                                                            apply_b_dec_to_input=False)}
    from mlxsight.tools.sae_train import TrainConfig, Trainer

    for arch in ("topk", "batchtopk", "relu", "jumprelu"):  # what our trainer writes, after a few steps
        trainer = Trainer(TrainConfig(architecture=arch, d_sae=128, k=4), 64, scale=0.7, site=Site.parse(SITE))
        for _ in range(5):
            trainer.step(x[:64] * 0.7)
        trainer._state[3] = mx.array(0.2)  # batchtopk: a threshold that makes the JumpReLU non-trivial
        saes[f"trained_{arch}"] = trainer.sae()
    for name, sae in saes.items():
        sae.save(tmp_path / name, model_name="stories260k")
        mx.save_safetensors(str(tmp_path / name / "inputs.safetensors"), {"x": x})
    report = sae_reference_env.run("check", *(str(tmp_path / n) for n in saes), timeout=300)
    for name, sae in saes.items():
        assert report[name]["hook_name"] == SITE
        ref = mx.load(str(tmp_path / name / "saelens_outputs.safetensors"))
        f = sae.encode(x)
        assert float((f > 0).sum(-1).mean()) > 0.5, name
        np.testing.assert_allclose(np.array(f), np.array(ref["encode"]), rtol=1e-5, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(np.array(sae.forward(x)), np.array(ref["forward"]), rtol=1e-5, atol=1e-5,
                                   err_msg=name)
        assert SAE.load(tmp_path / name).architecture == sae.architecture


def _gemma_scope_reference(p, x):
    """GemmaScope's published JumpReLU forward, in numpy."""
    pre = x @ p["W_enc"] + p["b_enc"]
    acts = (pre > p["threshold"]) * np.maximum(pre, 0)
    return acts, acts @ p["W_dec"] + p["b_dec"]


@pytest.mark.parametrize("fmt", ["npz", "safetensors"])
def test_gemma_scope_parameter_files(tmp_path, fmt):
    rng = np.random.default_rng(0)
    p = {"W_enc": rng.normal(size=(64, 128)) / 8, "W_dec": rng.normal(size=(128, 64)) / 8,
         "b_enc": rng.normal(size=128) * 0.1, "b_dec": rng.normal(size=64), "threshold": rng.uniform(0, 0.3, 128)}
    p = {k: v.astype(np.float32) for k, v in p.items()}
    d = tmp_path / "gemma-scope-2b-pt-mlp" / "layer_3" / "width_16k" / "average_l0_20"
    d.mkdir(parents=True)
    if fmt == "npz":
        np.savez(d / "params.npz", **p)
        sae = SAE.load(d)
    else:
        mx.save_safetensors(str(d / "params.safetensors"), {k: mx.array(v) for k, v in p.items()})
        sae = SAE.load(d / "params.safetensors")
    assert sae.architecture == "jumprelu" and not sae.apply_b_dec_to_input and sae.source == "gemma_scope"
    assert sae.hook_name == "blocks.3.hook_mlp_out" and sae.site.part == "mlp"
    x = rng.normal(size=(40, 64)).astype(np.float32)
    acts, recon = _gemma_scope_reference(p, x)
    assert 0 < (acts > 0).mean() < 1
    np.testing.assert_allclose(sae.encode(x), acts, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sae.forward(x), recon, rtol=1e-5, atol=1e-5)


def test_sparsify_checkpoint(tmp_path):
    """sparsify's forward: TopK of ReLU((x - b_dec) @ W_enc^T + b_enc), decoded with W_dec + b_dec."""
    rng = np.random.default_rng(0)
    d = tmp_path / "layers.2"
    d.mkdir()
    w = {"encoder.weight": rng.normal(size=(128, 64)) / 8, "encoder.bias": rng.normal(size=128) * 0.1,
         "W_dec": rng.normal(size=(128, 64)) / 8, "b_dec": rng.normal(size=64) * 0.3}
    w = {k: v.astype(np.float32) for k, v in w.items()}
    mx.save_safetensors(str(d / "sae.safetensors"), {k: mx.array(v) for k, v in w.items()})
    (d / "cfg.json").write_text(json.dumps({"activation": "topk", "expansion_factor": 2, "normalize_decoder": True,
                                            "num_latents": 128, "k": 6, "multi_topk": False,
                                            "skip_connection": False, "transcode": False, "d_in": 64}))
    sae = SAE.load(d)
    assert (sae.architecture, sae.k, sae.source, sae.hook_name) == ("topk", 6, "sparsify", "layers.2")
    assert (sae.site.layer, sae.site.part, sae.site.kind) == (2, "", "output")
    x = rng.normal(size=(30, 64)).astype(np.float32)
    pre = np.maximum((x - w["b_dec"]) @ w["encoder.weight"].T + w["encoder.bias"], 0)
    top = np.argsort(-pre, axis=-1)[:, :6]
    acts = np.zeros_like(pre)
    np.put_along_axis(acts, top, np.take_along_axis(pre, top, axis=-1), axis=-1)
    np.testing.assert_allclose(sae.encode(x), acts, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sae.forward(x), acts @ w["W_dec"] + w["b_dec"], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="one sparsify SAE per hookpoint"):
        SAE.load(tmp_path)


def test_never_unpickles(tmp_path):
    (tmp_path / "sae.pt").write_bytes(b"not read")
    with pytest.raises(ValueError, match="pickled checkpoints are never loaded"):
        SAE.load(tmp_path / "sae.pt")


def test_dtype_and_site_metadata(tmp_path):
    sae = random_sae("jumprelu").astype("bfloat16")
    sae.save(tmp_path / "bf16")
    back = SAE.load(tmp_path / "bf16")
    assert back.dtype == mx.bfloat16 and json.loads((tmp_path / "bf16" / "cfg.json").read_text())["dtype"] == "bfloat16"
    assert back.site == Site.parse(SITE) and (back.site.layer, back.site.part, back.site.kind) == (2, "", "output")
    assert SAE.load(tmp_path / "bf16", hook="model.layers.1:input").site.kind == "input"
    assert SAE.load(tmp_path / "bf16", dtype="float32").dtype == mx.float32


@pytest.mark.parametrize("architecture", ["standard", "jumprelu", "topk", "gated"])
def test_torch_tensors_are_computed_in_torch(architecture):
    import torch

    sae = random_sae(architecture, k=8 if architecture == "topk" else None)
    x = np.random.default_rng(0).normal(size=(2, 5, 64)).astype(np.float32)
    xt = torch.tensor(x, requires_grad=True)
    f = sae.encode(xt)
    assert isinstance(f, torch.Tensor)
    np.testing.assert_allclose(f.detach().numpy(), np.array(sae.encode(mx.array(x))), rtol=1e-5, atol=1e-5)
    sae.forward(xt).sum().backward()
    assert xt.grad is not None and float(xt.grad.abs().sum()) > 0


# --- in traces ------------------------------------------------------------------------------------

@pytest.mark.parametrize("architecture", ["standard", "jumprelu", "topk", "gated"])
def test_splice_without_edits_leaves_the_forward_unchanged(model, architecture):
    sae = random_sae(architecture, k=8 if architecture == "topk" else None)
    with model.trace(PROMPT):
        plain = model.output.logits.save()
    with model.trace(PROMPT):
        features = A.splice(model, sae).save()
        spliced = model.output.logits.save()
    assert features.shape == (1, plain.shape[1], 256) and float((features > 0).sum()) > 0
    np.testing.assert_allclose(np.array(spliced), np.array(plain), atol=1e-4, rtol=0)


@settings(max_examples=8, deadline=None)
@given(feature_rank=st.integers(0, 5), position=st.integers(1, 15))
def test_ablating_a_feature_subtracts_its_decoder_direction(model, feature_rank, position):
    sae = random_sae("jumprelu")
    with model.trace(PROMPT):
        h = model.model.layers[2].output.save()
    f = np.array(sae.encode(h))[0]
    feature = int(np.argsort(-f[position])[feature_rank])
    assert f[position, feature] > 0
    with model.trace(PROMPT):
        A.ablate(model, sae, feature)
        edited = model.model.layers[2].output.save()
        logits = model.output.logits.save()
    expected = np.array(h)[0] - f[:, feature:feature + 1] * np.array(sae.W_dec[feature])[None]
    np.testing.assert_allclose(np.array(edited)[0], expected, atol=1e-5)
    with model.trace(PROMPT):  # the same edit written by hand gives the same logits
        model.model.layers[2].output = mx.array(expected[None])
        by_hand = model.output.logits.save()
    np.testing.assert_allclose(np.array(logits), np.array(by_hand), atol=1e-4)


def test_clamp_and_steer(model):
    sae = random_sae("standard")
    with model.trace(PROMPT):
        h = model.model.layers[2].output.save()
    f = np.array(sae.encode(h))[0]
    with model.trace(PROMPT):
        A.clamp(model, sae, {7: 5.0})
        clamped = model.model.layers[2].output.save()
    expected = np.array(h)[0] + (5.0 - f[:, 7:8]) * np.array(sae.W_dec[7])[None]
    np.testing.assert_allclose(np.array(clamped)[0], expected, atol=1e-5)
    with model.trace(PROMPT):
        A.steer(model, sae, {3: 2.0, 9: -1.0})
        steered = model.model.layers[2].output.save()
    vec = 2.0 * np.array(sae.W_dec[3]) - np.array(sae.W_dec[9])
    np.testing.assert_allclose(np.array(steered)[0], np.array(h)[0] + vec, atol=1e-6)


def test_steering_during_generation_matches_adding_the_vector_by_hand(model):
    sae = random_sae("standard")
    with model.generate("Once upon a time", max_new_tokens=8) as tracer:
        for _ in tracer.iter[:8]:
            A.steer(model, sae, {3: 40.0})
        ids = tracer.result.save()
    vector = mx.array(40.0 * np.array(sae.W_dec[3]))
    with model.generate("Once upon a time", max_new_tokens=8) as tracer:
        for _ in tracer.iter[:8]:
            model.model.layers[2].output += vector
        by_hand = tracer.result.save()
    plain = model.generate("Once upon a time", max_new_tokens=8)
    assert ids.tolist() == by_hand.tolist()
    assert ids.tolist() != plain.tolist()


def test_feature_activations_and_top_contexts(model):
    sae = random_sae("jumprelu")
    fa = A.feature_activations(model, sae, PROMPT, top=5)
    with model.trace(PROMPT):
        h = model.model.layers[2].output.save()
    full = np.array(sae.encode(h))[0]
    assert fa.acts.shape == (len(fa.tokens), 5) and fa.tokens[0] == "<s>"
    np.testing.assert_allclose(fa.acts, full[:, fa.feature_ids], atol=1e-6)
    assert list(fa.feature_ids) == list(np.argsort(-full.max(0))[:5])
    corpus = [PROMPT, "The dog ran to the park.", "Tom had a red ball. He threw it high."]
    tc = A.top_contexts(model, sae, corpus, features=fa.feature_ids[:3], k=4, progress=False)
    per_text = [np.array(sae.encode(model_acts(model, t)))[0][:, fa.feature_ids[:3]] for t in corpus]
    all_vals = np.concatenate(per_text, axis=0)
    np.testing.assert_allclose(tc.values, -np.sort(-all_vals, axis=0)[:4].T, atol=1e-6)
    for j in range(3):
        for r in range(4):
            t, pos = tc.text_ids[j, r], tc.positions[j, r]
            assert abs(per_text[t][pos, j] - tc.values[j, r]) < 1e-6
            assert abs(tc.window_acts[j][r][tc.window_offsets[j, r]] - tc.values[j, r]) < 1e-6
    assert "[" in tc.describe(0)


def model_acts(model, text):
    with model.trace(text):
        h = model.model.layers[2].output.save()
    return h


def test_attribution_predicts_small_feature_edits(model):
    """A first-order check independent of the gradient machinery: scaling feature i by (1 - eps)
    everywhere changes the metric by about -eps * (sum of i's scores)."""
    sae = random_sae("standard")
    tok = model.tokenizer
    target = tok.convert_tokens_to_ids("▁She")
    attr = A.attribute(model, sae, PROMPT, lambda logits: logits[0, -3, target])
    assert attr.scores.shape == (len(attr.tokens), 256)
    eps = 1e-2
    for feature, total in attr.top(3):
        with model.trace(PROMPT):
            A.splice(model, sae, A.feature_edit(256, scale={feature: 1 - eps}))
            value = model.output.logits[0, -3, target].save()
        change = float(value) - attr.metric
        assert abs(change - (-eps * total)) < 0.05 * abs(eps * total) + 1e-4, (feature, change, total)


def test_mlx_view_and_explicit_sites(stories):
    sae = random_sae("standard")
    with stories.trace(PROMPT):
        plain = stories.output.save()
    with stories.trace(PROMPT):
        A.splice(stories, sae, site="model.layers.2")
        spliced = stories.output.save()
    np.testing.assert_allclose(np.array(spliced), np.array(plain), atol=1e-4)
    with stories.trace(PROMPT):
        h_in = stories.model.layers[3].input.save()
    fa = A.feature_activations(stories, sae, PROMPT, features=[1, 2], site="blocks.3.hook_resid_pre")
    np.testing.assert_allclose(fa.acts, np.array(sae.encode(h_in))[0][:, [1, 2]], atol=1e-6)


@pytest.mark.parametrize("hook", ["blocks.1.hook_mlp_out", "blocks.1.hook_attn_out", "blocks.0.hook_resid_pre",
                                  "hook_embed", "blocks.4.hook_resid_post"])
def test_every_site_splices_exactly_and_steers_alike_in_both_views(model, stories, hook):
    sae = random_sae("standard")
    results = []
    for m, logits in ((model, lambda: model.output.logits), (stories, lambda: stories.output)):
        with m.trace(PROMPT):
            plain = logits().save()
        with m.trace(PROMPT):
            A.splice(m, sae, site=hook)
            spliced = logits().save()
        with m.trace(PROMPT):
            A.steer(m, sae, {3: 10.0}, site=hook)
            steered = logits().save()
        np.testing.assert_allclose(np.array(spliced), np.array(plain), atol=1e-4)
        assert float(mx.abs(steered - plain).max()) > 1
        results.append(np.array(steered))
    np.testing.assert_allclose(results[0], results[1], atol=1e-4)


@pytest.fixture(scope="module")
def nnsight_model(stories_path):
    torch = pytest.importorskip("torch")
    nnsight = pytest.importorskip("nnsight")
    import warnings

    warnings.simplefilter("ignore")
    return nnsight.LanguageModel(str(stories_path), dispatch=True, dtype=torch.float32)


def test_the_same_calls_on_an_nnsight_model(model, nnsight_model):
    """splice/ablate/feature activations/attribution on nnsight (torch) agree with mlxsight."""
    sae = random_sae("jumprelu")
    nm = nnsight_model
    with nm.trace(PROMPT):
        plain = nm.output.logits.save()
    with nm.trace(PROMPT):
        A.splice(nm, sae)
        spliced = nm.output.logits.save()
    assert float((spliced - plain).abs().max()) < 1e-4
    fa_torch = A.feature_activations(nm, sae, PROMPT)
    fa_mlx = A.feature_activations(model, sae, PROMPT)
    assert list(fa_torch.feature_ids) == list(fa_mlx.feature_ids)
    np.testing.assert_allclose(fa_torch.acts, fa_mlx.acts, atol=1e-4)
    feature = int(fa_mlx.feature_ids[0])
    with nm.trace(PROMPT):
        A.ablate(nm, sae, feature)
        ablated_torch = nm.output.logits.save()
    with model.trace(PROMPT):
        A.ablate(model, sae, feature)
        ablated_mlx = model.output.logits.save()
    assert float((ablated_torch - plain).abs().max()) > 1e-2
    np.testing.assert_allclose(ablated_torch.detach().numpy(), np.array(ablated_mlx), atol=1e-4)
    target = nm.tokenizer.convert_tokens_to_ids("▁She")
    a_torch = A.attribute(nm, sae, PROMPT, lambda logits: logits[0, -3, target])
    a_mlx = A.attribute(model, sae, PROMPT, lambda logits: logits[0, -3, target])
    np.testing.assert_allclose(a_torch.scores, a_mlx.scores, atol=1e-4)
    assert abs(a_torch.metric - a_mlx.metric) < 1e-4
