"""Who owns the tokenizer: a transformers tokenizer passed to ``LanguageModel`` is configured in
place exactly as nnsight 0.8.1 configures it (pad = eos when missing, left padding; the model keeps
that same object), and an mlx-lm ``TokenizerWrapper`` the caller keeps is left as given. The
reference is nnsight itself, given a tokenizer in the same state."""

from __future__ import annotations

import warnings

import mlx.core as mx  # noqa: F401  (mlx before transformers, always)
import numpy as np
import pytest
from mlx_lm.tokenizer_utils import TokenizerWrapper

import mlxsight
from mlxsight import assets

PATH = str(assets.path("stories260k"))


def fresh_tokenizer(padding_side: str = "right"):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(PATH)
    tok.pad_token, tok.padding_side = None, padding_side
    return tok


def visible_state(model, tok) -> tuple:
    return (tok.padding_side, tok.pad_token, model.tokenizer is tok, model.tokenizer.padding_side,
            model.tokenizer.pad_token)


@pytest.mark.parametrize("side", ["right", "left"])
def test_passed_tokenizer_is_configured_as_nnsight_configures_it(side):
    nnsight = pytest.importorskip("nnsight")
    ours, theirs = fresh_tokenizer(side), fresh_tokenizer(side)
    model = mlxsight.LanguageModel(PATH, tokenizer=ours)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = nnsight.LanguageModel(PATH, tokenizer=theirs)
    assert visible_state(model, ours) == visible_state(reference, theirs)
    assert model.tokenizer.padding_side == "left" and model.tokenizer.pad_token == model.tokenizer.eos_token


def test_wrapper_the_caller_keeps_is_left_as_given():
    inner = fresh_tokenizer("right")
    wrapper = TokenizerWrapper(inner)
    model = mlxsight.LanguageModel(PATH, tokenizer=wrapper)
    assert wrapper._tokenizer is inner
    assert (inner.padding_side, inner.pad_token) == ("right", None)
    assert model.tokenizer is not inner
    assert (model.tokenizer.padding_side, model.tokenizer.pad_token) == ("left", inner.eos_token)
    # Batching still pads left with the eos id, as nnsight does: the short prompt's pads come first
    # and its last real token's logits equal a solo run's.
    prompts = ["Once upon a time there was", "The cat"]
    with model.trace(prompts):
        batched = model.output.logits.save()
    with model.trace(prompts[1]):
        solo = model.output.logits.save()
    ids = inner(prompts[1])["input_ids"]
    eos = inner.convert_tokens_to_ids(inner.eos_token)
    batch_ids = model.tokenizer(prompts, padding=True)["input_ids"][1]
    assert batch_ids[-len(ids):] == ids and set(batch_ids[:-len(ids)]) == {eos}
    np.testing.assert_allclose(np.array(batched[1, -1]), np.array(solo[0, -1]), atol=1e-4)
    assert (inner.padding_side, inner.pad_token) == ("right", None)


def test_mlx_lm_load_pair_is_left_as_given():
    """The usual mlx-lm script: ``module, tok = mlx_lm.load(path)``; wrapping them changes neither."""
    import mlx_lm

    module, wrapper = mlx_lm.load(PATH)
    inner = wrapper._tokenizer
    inner.pad_token, inner.padding_side = None, "right"
    model = mlxsight.LanguageModel(module, tokenizer=wrapper)
    assert wrapper._tokenizer is inner and (inner.padding_side, inner.pad_token) == ("right", None)
    assert (model.tokenizer.padding_side, model.tokenizer.pad_token) == ("left", inner.eos_token)
    with model.trace(["Once upon a time", "A"]):
        logits = model.output.logits.save()
    assert logits.shape[0] == 2 and (inner.padding_side, inner.pad_token) == ("right", None)
