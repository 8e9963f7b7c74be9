"""SAE training on MLX: losses against finite differences and hand-written estimators, the compiled
step against the plain one, the buffer against direct traces, and short runs against random SAEs."""

import mlxsight
import mlx.core as mx
import numpy as np
import pytest

from mlxsight.tools import Site
from mlxsight.tools import sample_corpus
from mlxsight.tools.sae_train import (ActivationBuffer, _auxk, TrainConfig, Trainer, ce_losses, init_params, loss_terms,
                                      reconstruction_metrics, token_contexts, train_sae)

SITE = "blocks.2.hook_resid_post"


def _batch(n=48, d=16, seed=0):
    rng = np.random.default_rng(seed)
    return mx.array(rng.normal(size=(n, d)) * 2 + rng.normal(size=d), dtype=mx.float64)


def _params64(config, d, seed=0):
    p = init_params(config, d, seed=seed)
    rng = np.random.default_rng(seed + 1)
    p = {k: mx.array(np.array(v), dtype=mx.float64) for k, v in p.items()}
    p["b_enc"] = mx.array(rng.normal(size=config.d_sae) * 0.1, dtype=mx.float64)
    p["b_dec"] = mx.array(rng.normal(size=d) * 0.1, dtype=mx.float64)
    if "threshold" in p:
        p["threshold"] = mx.array(rng.uniform(0.05, 0.3, size=config.d_sae), dtype=mx.float64)
    return p


def _finite_difference(f, params, name, index, eps=1e-6):
    def at(delta):
        arr = np.array(params[name]).copy()
        arr[index] += delta
        return float(f({**params, name: mx.array(arr, dtype=mx.float64)}))

    return (at(eps) - at(-eps)) / (2 * eps)


@pytest.mark.parametrize("architecture", ["relu", "topk", "batchtopk", "jumprelu"])
def test_loss_gradients_match_finite_differences(architecture):
    config = TrainConfig(architecture=architecture, d_sae=40, k=4, l1_coefficient=0.3, l0_coefficient=0.2)
    x = _batch()
    p = _params64(config, 16)
    dead = mx.array(np.arange(40) % 3 == 0, dtype=mx.float64)  # some dead latents: AuxK is on
    grads = mx.grad(lambda q: loss_terms(config, q, x, dead)[0])(p)
    if architecture in ("topk", "batchtopk"):
        # AuxK fits the residual as a constant (detached, as in SAELens and Gao et al.): hold it fixed.
        residual = x - loss_terms(config, p, x, dead)[1]["recon"]

        def f(q):
            _, parts = loss_terms(config, q, x, dead)
            pre = (x - q["b_dec"]) @ q["W_enc"] + q["b_enc"]
            return parts["mse"] + config.aux_coefficient * _auxk(q, pre, residual, dead, x.shape[-1])
    else:
        f = lambda q: loss_terms(config, q, x, dead)[0]  # noqa: E731
    rng = np.random.default_rng(0)
    names = ["W_enc", "W_dec", "b_dec"] + ([] if architecture == "jumprelu" else ["b_enc"])
    checked = 0
    for name in names:
        for _ in range(6):
            index = tuple(int(rng.integers(s)) for s in p[name].shape)
            fd = _finite_difference(f, p, name, index)
            got = float(np.array(grads[name])[index])
            assert abs(got - fd) <= 1e-5 + 1e-4 * abs(fd), (name, index, got, fd)
            checked += abs(fd) > 1e-8
    assert checked >= 6  # most probed coordinates carry gradient: the check is not vacuous


def test_jumprelu_threshold_gradient_is_the_rectangle_kernel_estimator():
    """The threshold's pseudo-gradient (Rajamanoharan et al.), written out in numpy."""
    config = TrainConfig(architecture="jumprelu", d_sae=40, l0_coefficient=0.2, jumprelu_bandwidth=0.5)
    x = _batch()
    p = _params64(config, 16)
    grads = mx.grad(lambda q: loss_terms(config, q, x, mx.zeros(40, dtype=mx.float64))[0])(p)
    xn, P = np.array(x), {k: np.array(v) for k, v in p.items()}
    pre = (xn - P["b_dec"]) @ P["W_enc"] + P["b_enc"]
    th, eps = P["threshold"], config.jumprelu_bandwidth
    acts = pre * (pre > th)
    recon = acts @ P["W_dec"] + P["b_dec"]
    d_acts = 2 * (recon - xn) @ P["W_dec"].T / len(xn)
    kernel = ((np.abs((pre - th) / eps)) < 0.5) / eps
    expected = -(th * kernel * d_acts).sum(0) - config.l0_coefficient * kernel.sum(0) / len(xn)
    assert np.abs(expected).max() > 1e-3
    np.testing.assert_allclose(np.array(grads["threshold"]), expected, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("architecture", ["topk", "jumprelu"])
def test_compiled_step_equals_the_plain_step(architecture):
    config = TrainConfig(architecture=architecture, d_sae=64, k=4, dead_after=10)
    x = mx.array(np.random.default_rng(0).normal(size=(32, 16)).astype(np.float32))
    a, b = Trainer(config, 16), Trainer(config, 16)
    b._compiled, b._compiled_no_aux = (lambda x: b._step(x, True)), (lambda x: b._step(x, False))  # not compiled
    for _ in range(3):
        out_a, out_b = a.step(x), b.step(x)
    for name in a.params:
        np.testing.assert_allclose(np.array(a._state[0][name]), np.array(b._state[0][name]), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.array(out_a[0]), np.array(out_b[0]), rtol=1e-5)


def test_decoder_norm_constraint_and_dead_latent_handling():
    x = mx.array(np.random.default_rng(0).normal(size=(64, 16)).astype(np.float32))
    topk = Trainer(TrainConfig(architecture="topk", d_sae=64, k=2, dead_after=1), 16)
    before = np.array(topk.params["W_enc"])
    for _ in range(4):
        topk.step(x)
    np.testing.assert_allclose(np.linalg.norm(np.array(topk.params["W_dec"]), axis=-1), 1.0, rtol=1e-5)
    dead = np.array(topk.since_fired >= 1)
    assert dead.any()
    # AuxK moves dead latents' encoders too (the TopK loss alone never would).
    assert np.abs(np.array(topk.params["W_enc"])[:, dead] - before[:, dead]).max() > 0

    relu = Trainer(TrainConfig(architecture="relu", d_sae=64, dead_after=1, resample_every=0), 16)
    relu.step(x)
    relu._state[2] = mx.where(mx.arange(64) < 5, 100.0, 0.0)
    old = np.array(relu.params["W_dec"])
    assert relu.resample(x) == 5
    new = np.array(relu.params["W_dec"])
    assert not np.allclose(new[:5], old[:5]) and np.allclose(new[5:], old[5:])
    assert float(mx.abs(relu.optimizer.state["W_dec"]["m"][:5]).max()) == 0
    assert relu.dead_fraction == 0


@pytest.fixture(scope="module")
def model(stories_path):
    return mlxsight.LanguageModel(stories_path)


@pytest.fixture(scope="module")
def corpus(model):
    return sample_corpus(model, 96, max_tokens=128)


def test_activation_buffer_is_bounded_shuffled_and_traced(model, corpus):
    buf = ActivationBuffer(model, SITE, corpus[:16], context=32, capacity=1024, contexts_per_trace=8)
    batch = np.array(buf.next_batch(256))
    assert buf.store.shape == (1024, 64)
    contexts = token_contexts(model.tokenizer, corpus[:16], 32)
    assert (contexts[:, 0] == model.tokenizer.bos_token_id).all()
    with model.trace(mx.array(contexts)):
        h = model.model.layers[2].output.save()
    direct = np.array(h)
    traced = direct[:, 1:].reshape(-1, 64)
    bos = direct[:, 0]
    dist = lambda a, b: np.min(np.linalg.norm(a[:, None] - b[None], axis=-1), axis=1)  # noqa: E731
    assert dist(batch, traced).max() < 1e-4          # every activation comes from a trace
    assert dist(batch, bos).min() > 1e-3             # BOS never enters the buffer
    rows = [int(np.argmin(np.linalg.norm(traced - r, axis=-1))) for r in batch[:64]]
    assert len({r // 31 for r in rows}) > 8          # consecutive rows mix many contexts
    for _ in range(6):
        buf.next_batch(256)                           # past half: refilled in place, same bound
    assert buf.store.shape == (1024, 64) and buf.activations_traced >= 1024 + 512


def _random_sae(k, site, d_sae=256):
    """The baseline: an untrained TopK SAE at the trained one's sparsity (random unit directions)."""
    return Trainer(TrainConfig(architecture="topk", d_sae=d_sae, k=k, seed=7), 64, site=Site.parse(site)).sae()


@pytest.mark.parametrize("architecture", ["topk", pytest.param("jumprelu", marks=pytest.mark.slow),
                                          pytest.param("batchtopk", marks=pytest.mark.slow),
                                          pytest.param("relu", marks=pytest.mark.slow)])
def test_short_training_beats_a_random_sae_widely(model, corpus, architecture):
    config = TrainConfig(architecture=architecture, d_sae=256, k=8, steps=120, batch_size=512,
                         lr=3e-3 if architecture == "jumprelu" else 1e-3, l0_coefficient=2.0)
    sae, log = train_sae(model, SITE, corpus[:80], config, context=64, buffer_capacity=16384, log_every=40,
                         progress=False)
    assert [r["step"] for r in log.rows] == [40, 80, 120]
    assert all(k in log.rows[-1] for k in ("fvu", "l0", "dead_fraction", "mse", "acts_per_s"))
    held_out = token_contexts(model.tokenizer, corpus[80:], 64)[:16]
    with model.trace(mx.array(held_out)):
        h = model.model.layers[2].output.save()
    acts = h[:, 1:].reshape(-1, 64)
    trained = reconstruction_metrics(sae, acts)
    baseline = _random_sae(max(1, round(trained["l0"])), SITE)
    random = reconstruction_metrics(baseline, acts)
    ce = ce_losses(model, sae, held_out)
    ce_random = ce_losses(model, baseline, held_out)
    assert trained["fvu"] < 0.35 and random["fvu"] > 3 * trained["fvu"], (trained, random)
    assert ce["ce_recovered"] > 0.7 and ce["ce_recovered"] > ce_random["ce_recovered"] + 0.3, (ce, ce_random)
    assert 1 <= trained["l0"] < 0.4 * config.d_sae
