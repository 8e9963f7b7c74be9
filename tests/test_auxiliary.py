"""Modules attached to a traced model and called inside traces (nnsight's SAE pattern).

Under compat the script ``compat_scripts/aux_modules.py`` (a torch SAE with ``WrapperModule``
locations, applied in an edit with ``hook=True``, its internals read and written) is run on real
nnsight and on mlxsight, and every saved value compared. In pure mlxsight, MLX and torch modules
attached the same way are checked against hand-written forwards in numpy."""

from __future__ import annotations

import json

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

import mlxsight
from mlxsight import assets
from mlxsight.errors import ModuleNotCalledError, OutOfOrderError

from test_conformance_causes import SCRIPTS, run
from tiny_models import cached_checkpoint

PROMPT = "Once upon a time"


def test_an_attached_torch_sae_matches_nnsight(tmp_path):
    out = tmp_path / "table.json"
    proc = run("-m", "compat", "crosscheck", str(SCRIPTS / "aux_modules.py"), str(cached_checkpoint("llama")),
               "--json", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = json.loads(out.read_text())
    assert table["passed"] and table["ran_ok"] == [True, True]
    assert len(table["rows"]) == 15 and all(row["verdict"] == "ok" for row in table["rows"])


class MLXSAE(nn.Module):
    def __init__(self, d: int, n: int) -> None:
        super().__init__()
        self.encoder = nn.Linear(d, n)
        self.decoder = nn.Linear(n, d)

    def __call__(self, x: mx.array) -> mx.array:
        return self.decoder(nn.relu(self.encoder(x)))


def _reference(sae_weights: dict, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The SAE's forward by hand: (the encoder's output, the reconstruction)."""
    pre = h @ sae_weights["enc_w"].T + sae_weights["enc_b"]
    return pre, np.maximum(pre, 0) @ sae_weights["dec_w"].T + sae_weights["dec_b"]


@pytest.fixture
def stories():
    return mlxsight.LanguageModel(str(assets.path("stories260k")))


def _weights(sae) -> dict:
    if isinstance(sae, nn.Module):
        w = [sae.encoder.weight, sae.encoder.bias, sae.decoder.weight, sae.decoder.bias]
        w = [np.array(x) for x in w]
    else:
        w = [p.detach().numpy() for p in (sae.encoder.weight, sae.encoder.bias, sae.decoder.weight, sae.decoder.bias)]
    return dict(zip(["enc_w", "enc_b", "dec_w", "dec_b"], w))


def _torch_sae(d: int, n: int):
    torch = pytest.importorskip("torch")

    class TorchSAE(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = torch.nn.Linear(d, n)
            self.decoder = torch.nn.Linear(n, d)

        def forward(self, x):
            return self.decoder(torch.relu(self.encoder(x)))

    torch.manual_seed(0)
    return TorchSAE()


@pytest.mark.parametrize("kind", ["mlx", "torch"])
def test_a_hooked_call_serves_the_internals_of_an_attached_module(stories, kind):
    layer = stories.model.layers[2]
    with stories.trace(PROMPT):
        clean = layer.output.save()
    d = clean.shape[-1]
    mx.random.seed(0)
    sae = MLXSAE(d, 4 * d) if kind == "mlx" else _torch_sae(d, 4 * d)
    layer.sae = sae
    weights = _weights(sae)
    with stories.edit(inplace=True):
        layer.output = layer.sae(layer.output, hook=True)
    with stories.trace(PROMPT):
        feats = layer.sae.encoder.output.save()
        layer.sae.decoder.input[:, -1] = 0  # a write inside the module flows on
        recon = layer.output.save()
    stories.clear_edits()
    ref_feats, _ = _reference(weights, np.array(clean))
    zeroed = np.maximum(ref_feats, 0)
    zeroed[:, -1] = 0
    ref_recon = zeroed @ weights["dec_w"].T + weights["dec_b"]
    np.testing.assert_allclose(np.array(feats), ref_feats, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.array(recon), ref_recon, rtol=1e-4, atol=1e-5)
    with stories.trace(PROMPT):  # the edit gone, the model computes what it did before
        again = layer.output.save()
    np.testing.assert_array_equal(np.array(again), np.array(clean))
    if kind == "torch":
        assert "forward" not in vars(sae.encoder) and "forward" not in vars(sae)


@pytest.mark.parametrize("kind", ["mlx", "torch"])
def test_a_plain_call_of_an_attached_module_is_one_operation(stories, kind):
    layer = stories.model.layers[1]
    with stories.trace(PROMPT):
        h = layer.output.save()
    d = h.shape[-1]
    mx.random.seed(1)
    layer.sae = sae = MLXSAE(d, 2 * d) if kind == "mlx" else _torch_sae(d, 2 * d)
    with stories.trace(PROMPT):
        out = layer.sae(layer.output).save()
        enc = layer.sae.encoder(layer.output * 2).save()
    w = _weights(sae)
    np.testing.assert_allclose(np.array(out), _reference(w, np.array(h))[1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.array(enc), 2 * np.array(h) @ w["enc_w"].T + w["enc_b"], rtol=1e-4, atol=1e-5)
    with pytest.raises(ModuleNotCalledError):  # not observed: nothing inside it is served
        with stories.trace(PROMPT):
            layer.sae(layer.output)
            layer.sae.encoder.output.save()


def test_internals_of_a_hooked_call_are_read_in_its_forward_order(stories):
    layer = stories.model.layers[2]
    with stories.trace(PROMPT):
        d = mlxsight.save(layer.output.shape[-1])
    layer.sae = MLXSAE(d, 2 * d)
    with stories.edit(inplace=True):
        layer.output = layer.sae(layer.output, hook=True)
    with pytest.raises(OutOfOrderError):
        with stories.trace(PROMPT):
            layer.sae.decoder.output.save()
            layer.sae.encoder.output.save()
    stories.clear_edits()


def test_an_edits_open_loop_applies_at_every_generation_step(stories):
    """nnsight runs an edit's ``for _ in tracer.iter[:]`` body at each step of a later generate: the
    same ids as a generation whose own loop makes the edit at every step, each step's value zero."""
    layer = stories.model.layers[1]
    with stories.generate(PROMPT, max_new_tokens=4) as tracer:
        for _ in tracer.iter[:4]:
            layer.output[:] = 0
        expected = tracer.result.save()
    with stories.edit(inplace=True) as tracer:
        for _ in tracer.iter[:]:
            layer.output[:] = 0
    with stories.generate(PROMPT, max_new_tokens=4) as tracer:
        seen = mlxsight.save([])
        for _ in tracer.iter[:4]:
            seen.append(layer.output)
        ids = tracer.result.save()
    stories.clear_edits()
    assert [tuple(v.shape)[1] for v in seen] == [len(seen[0][0]), 1, 1, 1]
    assert all(not np.array(v).any() for v in seen)
    np.testing.assert_array_equal(np.array(ids), np.array(expected))


def test_a_cache_holds_a_hooked_calls_modules(stories):
    """nnsight's cache page: a module called with hook=True appears in ``tracer.cache()`` with its
    submodules (after the point its argument comes from); without hook=True it does not."""
    layer = stories.model.layers[2]
    with stories.trace(PROMPT):
        d = mlxsight.save(layer.output.shape[-1])
    mx.random.seed(2)
    layer.sae = sae = MLXSAE(d, 2 * d)
    with stories.trace(PROMPT) as tracer:
        cache = tracer.cache()
        h = layer.output.save()
        layer.output = layer.sae(layer.output, hook=True)
    keys = list(cache.keys())
    assert {"model.model.layers.2.sae", "model.model.layers.2.sae.encoder"} <= set(keys)
    assert keys.index("model.model.layers.2.sae.encoder") < keys.index("model.model.layers.2.sae")
    w = _weights(sae)
    np.testing.assert_allclose(np.array(cache["model.model.layers.2.sae.encoder"].output),
                               _reference(w, np.array(h))[0], rtol=1e-4, atol=1e-5)
    with stories.trace(PROMPT) as tracer:
        cache = tracer.cache()
        layer.output = layer.sae(layer.output)
    assert "model.model.layers.2.sae" not in cache.keys()
