"""tools.TunedLens: identity translators equal the logit lens exactly; training lowers the held-out
KL; the tuned-lens package's directory format round-trips and never unpickles code; both backends."""

from __future__ import annotations

import json
import pickle
import zipfile

import numpy as np
import pytest

import mlxsight
from mlxsight import tools
from tiny_models import cached_checkpoint

PROMPT = "Once upon a time, there was a little girl named Lily. She loved to play"


@pytest.fixture(scope="module")
def trained(stories, tmp_path_factory):
    import os

    os.environ["MLXSIGHT_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    try:
        corpus = tools.sample_corpus(stories, n=24, max_tokens=48, batch_size=24)
        again = tools.sample_corpus(stories, n=24, max_tokens=48, batch_size=24)  # from the cache
        lens = tools.TunedLens.train(stories, corpus, steps=25, seq_len=24, batch_size=4, lr=1e-2,
                                     held_out=0.2, progress=False)
    finally:
        del os.environ["MLXSIGHT_CACHE"]
    assert again == corpus and len(corpus) == 24 and all(isinstance(t, str) for t in corpus)
    return lens


def test_identity_translators_equal_the_logit_lens_exactly(stories):
    lens = tools.TunedLens.from_model(stories)
    tuned = lens(stories, PROMPT, targets="next", include_embeddings=True)
    logit = tools.logit_lens(stories, PROMPT, targets="next", include_embeddings=True)
    assert tuned.kind == "tuned" and logit.kind == "logit"
    assert np.array_equal(tuned.probs, logit.probs) and np.array_equal(tuned.top_ids, logit.top_ids)
    assert np.array_equal(tuned.target_nll, logit.target_nll, equal_nan=True)


def test_training_lowers_held_out_kl(trained, stories):
    kl = trained.held_out_kl
    assert len(kl["logit"]) == len(kl["tuned"]) == 5
    assert all(t < l for t, l in zip(kl["tuned"], kl["logit"])), kl
    assert kl["tuned"][0] < 0.2 * kl["logit"][0], kl  # embeddings: 21 nats -> about 2 in 25 steps
    # the trained lens decodes earlier layers better than the logit lens, and leaves the last alone
    tuned = trained(stories, PROMPT, targets="next", include_embeddings=True)
    logit = tools.logit_lens(stories, PROMPT, targets="next", include_embeddings=True)
    assert np.nanmean(tuned.target_nll[0]) < np.nanmean(logit.target_nll[0])
    assert np.array_equal(tuned.probs[-1], logit.probs[-1])


def test_translators_by_hand(trained, stories):
    """Row for layer l = softmax(unembed(h + W h + b)) with translator l + 1, computed in numpy."""
    import mlx.core as mx

    ids = stories.tokenizer(PROMPT)["input_ids"]
    with stories.trace(ids):
        h = stories.model.layers[1].output.save()
    h = np.array(h[0])
    x = h + h @ trained.weight[2].T + trained.bias[2]
    std = tools.standardize(stories)
    ref = np.array(mx.softmax(std.logits(mx.array(x)), axis=-1))
    r = trained(stories, ids, layers=[1])
    assert np.abs(r.probs[0] - ref).max() < 1e-5


def test_save_load_round_trip_in_tuned_lens_format(trained, stories, tmp_path):
    import torch

    trained.save(tmp_path / "lens")
    assert sorted(p.name for p in (tmp_path / "lens").iterdir()) == ["config.json", "params.pt"]
    config = json.loads((tmp_path / "lens" / "config.json").read_text())
    assert config["d_model"] == 64 and config["num_hidden_layers"] == 5 and config["lens_type"] == "linear_tuned_lens"
    assert config["bias"] is True and len(config["unembed_hash"]) == 64
    state = torch.load(tmp_path / "lens" / "params.pt", weights_only=True)
    assert list(state) == [f"{i}.{p}" for i in range(5) for p in ("weight", "bias")]
    # what tuned-lens builds: a ModuleList of Linear(d, d) loading that state dict
    translators = torch.nn.ModuleList([torch.nn.Linear(64, 64) for _ in range(5)])
    translators.load_state_dict(state)
    assert np.array_equal(translators[3].weight.detach().numpy(), trained.weight[3])
    loaded = tools.TunedLens.load(tmp_path / "lens")
    assert np.array_equal(loaded.weight, trained.weight) and np.array_equal(loaded.bias, trained.bias)
    assert np.array_equal(loaded(stories, PROMPT).probs, trained(stories, PROMPT).probs)


class _Boom:
    def __reduce__(self):
        return (print, ("unpickled code ran",))


def test_load_refuses_pickled_code(trained, tmp_path):
    import torch

    trained.save(tmp_path / "lens")
    torch.save({"0.weight": _Boom()}, tmp_path / "lens" / "params.pt")
    assert zipfile.is_zipfile(tmp_path / "lens" / "params.pt")
    with pytest.raises(pickle.UnpicklingError):
        tools.TunedLens.load(tmp_path / "lens")


def test_load_checks_shapes(trained, tmp_path):
    trained.save(tmp_path / "lens")
    config = json.loads((tmp_path / "lens" / "config.json").read_text())
    (tmp_path / "lens" / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 4}))
    with pytest.raises(ValueError, match="unexpected keys"):
        tools.TunedLens.load(tmp_path / "lens")


def test_wrong_model(trained):
    model = mlxsight.LanguageModel(cached_checkpoint("llama"))
    with pytest.raises(ValueError, match="5 translators of width 64; the model has 4 layers"):
        trained(model, "Hello")


def test_both_backends(trained, stories_path, tmp_path):
    import nnsight
    from transformers import AutoTokenizer

    ours = trained(mlxsight.LanguageModel(stories_path), PROMPT, targets="next", include_embeddings=True)
    torch_model = nnsight.LanguageModel(str(stories_path), tokenizer=AutoTokenizer.from_pretrained(str(stories_path)))
    theirs = trained(torch_model, PROMPT, targets="next", include_embeddings=True)
    assert ours.input_ids == theirs.input_ids and theirs.kind == "tuned"
    assert np.abs(ours.probs - theirs.probs).max() < 1e-5
    with pytest.raises(TypeError, match="runs on MLX"):
        tools.TunedLens.train(torch_model, ["Once upon a time"], steps=1)


def test_the_tuned_lens_package_reads_our_lens(stories_path, tmp_path):
    """Where the tuned-lens package (0.2.0) is installed: it loads a saved lens (no hash warning) and
    decodes HF hidden_states[i] with translator i to our probabilities (verified: max diff 1.7e-6)."""
    pytest.importorskip("tuned_lens")
    import torch
    import transformers as tf
    from tuned_lens.nn.lenses import TunedLens as PackageLens

    model = mlxsight.LanguageModel(stories_path)
    lens = tools.TunedLens.from_model(model)
    rng = np.random.default_rng(0)
    lens.weight = (rng.normal(size=lens.weight.shape) * 0.1).astype(np.float32)
    lens.bias = (rng.normal(size=lens.bias.shape) * 0.1).astype(np.float32)
    ours = lens(model, PROMPT, include_embeddings=True)
    hf = tf.AutoModelForCausalLM.from_pretrained(str(stories_path), dtype=torch.float32).eval()
    theirs = PackageLens.from_model_and_pretrained(hf, lens_resource_id=str(lens.save(tmp_path / "lens")))
    assert theirs.config.unembed_hash == lens.config["unembed_hash"]
    with torch.no_grad():
        hidden = hf(torch.tensor([ours.input_ids]), output_hidden_states=True).hidden_states
        for i in range(5):
            assert np.abs(theirs(hidden[i], idx=i).softmax(-1)[0].numpy() - ours.probs[i]).max() < 1e-5


def test_layer_groups_under_a_logits_budget_train_the_same(stories, monkeypatch):
    """A step split into groups of translators (large vocabularies) gives the same lens."""
    from tiny_models import corpus

    texts = corpus(40)
    whole = tools.TunedLens.train(stories, texts, steps=6, seq_len=16, batch_size=2, lr=1e-2, progress=False)
    monkeypatch.setattr(tools.tuned_lens, "LOGITS_BUDGET", 1)  # one translator per group
    assert tools.tuned_lens._groups(5, 1000) == [[0], [1], [2], [3], [4]]
    grouped = tools.TunedLens.train(stories, texts, steps=6, seq_len=16, batch_size=2, lr=1e-2, progress=False)
    assert np.abs(whole.weight).max() > 1e-3
    # Adam over float32 gradients summed in another order: where a gradient is near zero its step's
    # sign can differ (3.4e-4 apart on weights up to 0.29 seen on one machine, 1e-5 on another)
    scale = np.abs(whole.weight).max()
    assert np.abs(whole.weight - grouped.weight).max() <= 1e-2 * scale
    assert np.abs(whole.bias - grouped.bias).max() <= 1e-2 * max(np.abs(whole.bias).max(), 1e-3)
    assert np.allclose(whole.held_out_kl["tuned"], grouped.held_out_kl["tuned"], rtol=1e-4)


def test_from_an_nnsight_model_matches(stories, stories_path):
    import nnsight
    from transformers import AutoTokenizer

    torch_model = nnsight.LanguageModel(str(stories_path), tokenizer=AutoTokenizer.from_pretrained(str(stories_path)))
    theirs = tools.TunedLens.from_model(torch_model)  # before any trace: the weights load first
    ours = tools.TunedLens.from_model(stories)
    assert theirs.config["unembed_hash"] == ours.config["unembed_hash"] and theirs.weight.shape == ours.weight.shape
