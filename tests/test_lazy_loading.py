"""Lazy loading: ``LanguageModel(path)`` builds the architecture without reading weights,
``dispatch()`` (or the first trace) reads them into the same modules, ``scan`` never does;
``dtype=`` and ``config=`` as transformers' ``from_pretrained`` takes them.

References are independent: mlx-lm's own eager ``load``, transformers' ``from_pretrained`` on the
same checkpoint (with the same ``config=``), MLX's memory counter for "nothing was read"."""

from __future__ import annotations

import gc
import json
import logging

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

import mlxsight
from tiny_models import cached_checkpoint

IDS = [[3, 17, 42, 5, 9, 11]]


def _active() -> int:
    gc.collect()
    return mx.get_active_memory()


def _weight_bytes(path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.safetensors"))


@pytest.fixture(scope="module")
def gpt2_path():
    return cached_checkpoint("gpt2")


@pytest.fixture(scope="module")
def neox_path():
    return cached_checkpoint("gpt_neox")


def test_construction_and_scan_read_no_weights(gpt2_path):
    before = _active()
    model = mlxsight.LanguageModel(str(gpt2_path))
    assert model.dispatched is False
    built = _active() - before
    with model.scan(IDS):
        hidden = model.transformer.h[-1].output.save()
    assert hidden.shape == (1, len(IDS[0]), model.config.n_embd)  # shapes are known: nothing ran
    assert model.dispatched is False
    # The checkpoint is far larger than anything building and scanning allocated: no weight was read.
    assert _active() - before < _weight_bytes(gpt2_path) / 10, (built, _weight_bytes(gpt2_path))
    model.dispatch()
    assert model.dispatched is True and _active() - before >= _weight_bytes(gpt2_path) * 0.9


def test_lazy_logits_equal_mlx_lm_eager_load_and_transformers(gpt2_path):
    import torch
    from mlx_lm import load
    from transformers import AutoModelForCausalLM

    model = mlxsight.LanguageModel(str(gpt2_path))
    envoy = model.transformer.h[1]
    with model.trace(IDS):
        logits = model.output.logits.save()
    assert model.dispatched is True and model.transformer.h[1] is envoy  # envoys are kept
    eager, _ = load(str(gpt2_path))
    np.testing.assert_array_equal(np.array(logits), np.array(eager(mx.array(IDS))))
    reference = AutoModelForCausalLM.from_pretrained(str(gpt2_path), dtype=torch.float32).eval()
    with torch.no_grad():
        expected = reference(torch.tensor(IDS)).logits.numpy()
    np.testing.assert_allclose(np.array(logits), expected, atol=1e-4, rtol=1e-4)


def test_dispatch_fills_the_same_modules_and_parent_links_hold(gpt2_path):
    model = mlxsight.LanguageModel(str(gpt2_path))
    block, mlp_module = model.transformer.h[1], model.transformer.h[1].mlp.mlx_module
    model.dispatch()
    assert model.transformer.h[1] is block and block.mlp.mlx_module is mlp_module
    assert block.parent is model.transformer.h and model.transformer.h.parent is model.transformer
    assert block.mlp.c_fc.root is model and model.parent is None
    for node in model.modules():
        for child in node._children:
            assert child.parent is node


def test_eager_dispatch_reads_at_construction(gpt2_path):
    model = mlxsight.LanguageModel(str(gpt2_path), dispatch=True)
    assert model.dispatched is True


@pytest.mark.parametrize("key", ["dtype", "torch_dtype"])
def test_auto_dtype_is_the_checkpoints_and_lands_on_the_config(gpt2_path, key):
    saved = {str(v.dtype) for v in mx.load(str(gpt2_path / "model.safetensors")).values()}
    model = mlxsight.LanguageModel(str(gpt2_path), **{key: "auto"})
    assert model.dispatched is False
    assert {str(v.dtype) for _, v in tree_flatten(model.mlx_model.parameters())} == saved
    assert f"mlx.core.{model.config.dtype}" in saved


def test_an_explicit_dtype_holds_before_and_after_dispatch(gpt2_path):
    model = mlxsight.LanguageModel(str(gpt2_path), dtype="float16")
    dtypes = lambda: {v.dtype for _, v in tree_flatten(model.mlx_model.parameters())}  # noqa: E731
    assert dtypes() == {mx.float16} and model.config.dtype == "float16"
    model.dispatch()
    assert dtypes() == {mx.float16}


def _neox_config(path, **changes):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(path))
    for key, value in changes.items():
        setattr(config, key, value)
    return config


@pytest.mark.parametrize("dispatch", [False, True])
def test_a_config_builds_the_model_and_matches_transformers_from_the_same_config(neox_path, dispatch, caplog):
    import torch
    from transformers import AutoModelForCausalLM

    config = _neox_config(neox_path)
    config = _neox_config(neox_path, num_hidden_layers=1, use_parallel_residual=not config.use_parallel_residual)
    with caplog.at_level(logging.WARNING, logger="mlxsight.loading"):
        model = mlxsight.LanguageModel(str(neox_path), config=config.to_dict(), dispatch=dispatch)
    assert model.dispatched is dispatch
    assert len(model.gpt_neox.layers) == 1 and model.config.use_parallel_residual is config.use_parallel_residual
    # The checkpoint's other layers are not used, and reported as transformers reports them.
    assert "UNEXPECTED" in caplog.text and ".h.1." in caplog.text and "MISSING" not in caplog.text
    with model.trace(IDS):
        logits = model.output.logits.save()
    reference = AutoModelForCausalLM.from_pretrained(str(neox_path), config=config, dtype=torch.float32).eval()
    with torch.no_grad():
        expected = reference(torch.tensor(IDS)).logits.numpy()
    np.testing.assert_allclose(np.array(logits), expected, atol=1e-4, rtol=1e-4)


def test_an_unchanged_config_loads_the_checkpoint_exactly(gpt2_path, caplog):
    config = json.loads((gpt2_path / "config.json").read_text())
    with caplog.at_level(logging.WARNING, logger="mlxsight.loading"):
        model = mlxsight.LanguageModel(str(gpt2_path), config=config)
    assert "LOAD REPORT" not in caplog.text and model.tokenizer is not None
    plain = mlxsight.LanguageModel(str(gpt2_path))
    with model.trace(IDS):
        got = model.output.logits.save()
    with plain.trace(IDS):
        expected = plain.output.logits.save()
    assert mx.array_equal(got, expected)


def test_a_size_mismatch_raises_unless_ignored_as_in_transformers(neox_path, caplog):
    config = _neox_config(neox_path).to_dict()
    config["vocab_size"] += 8
    with pytest.raises(RuntimeError, match="(?s)size mismatch.*ignore_mismatched_sizes"):
        mlxsight.LanguageModel(str(neox_path), config=config)
    with caplog.at_level(logging.WARNING, logger="mlxsight.loading"):
        model = mlxsight.LanguageModel(str(neox_path), config=config, ignore_mismatched_sizes=True)
    assert "MISMATCH" in caplog.text
    assert model.gpt_neox.embed_in.weight.shape[0] == config["vocab_size"]


def test_a_config_change_mlx_lm_cannot_build_is_refused_naming_the_key(neox_path):
    config = _neox_config(neox_path).to_dict()
    config["attention_dropout"] = 0.5 if config.get("attention_dropout") != 0.5 else 0.25  # never read here
    with pytest.raises(NotImplementedError, match="'attention_dropout'"):
        mlxsight.LanguageModel(str(neox_path), config=config)
