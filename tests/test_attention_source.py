"""transformers' attention as ``.source`` shows it, and ``output_attentions=True``, against nnsight
and transformers on the same tiny checkpoints.

References: nnsight 0.8.1 over transformers 5 (the operation names its ``.source`` gives
``GPT2Attention.forward``, the values at them, a drill into ``attention_interface_1``), and
transformers' own ``outputs.attentions``.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

import mlxsight
from mlxsight.errors import OutOfOrderError
from mlxsight.source import SourceNotAvailable
from tiny_models import cached_checkpoint

PROMPT = "The cat saw a red ball in the park"
PROMPTS = ["The cat saw a red ball in the park and the dog found it.", "Hello, world!"]
TOL = 2e-5
# Where MLX spells the same step differently: ``reshape`` for ``view``, no ``contiguous``, mlx-lm's
# per-layer KVCache (``update_and_fetch``) for transformers' Cache (``update``, EncoderDecoderCache).
MLX_SPELLING = ("_view_", "contiguous", "curr_past_key_values", "isinstance", "past_key_values_is_updated",
                "is_updated")


def _nnsight(path, attn_implementation):
    from nnsight.modeling.transformers import TransformersModel

    return TransformersModel(str(path), task="text-generation", attn_implementation=attn_implementation,
                             dispatch=True)


def _np(x):
    return np.asarray(x.detach().numpy() if hasattr(x, "detach") else x)


@pytest.fixture(scope="module")
def gpt2_path():
    return cached_checkpoint("gpt2")


def test_gpt2_attention_operations_are_transformers(gpt2_path):
    ours = mlxsight.LanguageModel(gpt2_path).transformer.h[0].attn.source.operations
    theirs = list(_nnsight(gpt2_path, "sdpa").transformer.h[0].attn.source.names)
    spelled = [n for n in theirs if any(s in n for s in MLX_SPELLING)]
    assert [n for n in theirs if n not in spelled] == [n for n in ours if n in theirs and n not in spelled]
    assert len(spelled) == 14  # 5 `view`s, `contiguous`, 8 of the cache branches: nothing else
    for name in ("attention_interface_0", "attention_interface_1", "transpose_0", "transpose_2", "split_1",
                 "ALL_ATTENTION_FUNCTIONS_get_interface_0", "attn_output_reshape_0", "self_c_proj_0"):
        assert name in ours


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_gpt2_attention_values_match_nnsight(gpt2_path, impl):
    def run(model, ids):
        attn = model.transformer.h[1].attn.source
        with model.trace(ids):
            key = attn.transpose_2.output.save()
            query = attn.transpose_4.output.save()
            both = attn.attention_interface_1.output.save()
            merged = attn.attn_output_reshape_0.output.save()
            out = model.transformer.h[1].attn.output[0].save()
        flat = [key, query, both[0], both[1], merged, out]
        return [None if v is None else _np(v) for v in flat]

    ours_model = mlxsight.LanguageModel(gpt2_path, attn_implementation=impl)
    theirs_model = _nnsight(gpt2_path, impl)
    ids = ours_model.tokenizer(PROMPT)["input_ids"]
    ours = run(ours_model, [ids])
    import torch

    theirs = run(theirs_model, torch.tensor([ids]))
    for a, b in zip(ours, theirs):
        if b is None:
            assert a is None
        else:
            assert a.shape == b.shape and np.abs(a - b).max() < TOL


def test_drilling_into_the_attention_function_matches_nnsight(gpt2_path):
    import torch

    def run(model, ids):
        attn = model.transformer.h[0].attn
        with model.trace(ids):
            inner = attn.source.attention_interface_1.source
            probs = inner.nn_functional_softmax_0.output.save()
            inner.attn_weights_4.output = inner.attn_weights_4.output * 0.5  # an edit inside the function
            moved = inner.attn_output_transpose_0.output.save()
            logits = model.output.logits.save()
        return [_np(probs), _np(moved), _np(logits)]

    ours_model = mlxsight.LanguageModel(gpt2_path, attn_implementation="eager")
    ids = ours_model.tokenizer(PROMPT)["input_ids"]
    ours = run(ours_model, [ids])
    theirs = run(_nnsight(gpt2_path, "eager"), torch.tensor([ids]))
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape and np.abs(a - b).max() < 1e-4
    plain = mlxsight.LanguageModel(gpt2_path, attn_implementation="eager")
    with plain.trace([ids]):
        unedited = plain.output.logits.save()
    assert np.abs(np.asarray(unedited) - ours[2]).max() > 1e-3  # the edit reached the output


def test_drill_rules(gpt2_path):
    model = mlxsight.LanguageModel(gpt2_path, attn_implementation="eager")
    attn = model.transformer.h[0].attn
    with pytest.raises(SourceNotAvailable, match="inside a trace"):
        attn.source.attention_interface_1.source  # noqa: B018
    with pytest.raises(SourceNotAvailable, match="submodule"):
        with model.trace(PROMPT):
            attn.source.self_c_proj_0.source  # noqa: B018
    with pytest.raises(SourceNotAvailable, match="no Python source"):
        with model.trace(PROMPT):
            attn.source.split_1.source  # noqa: B018
    with pytest.raises(OutOfOrderError):  # a drill is served before the call: not after its output
        with model.trace(PROMPT):
            attn.source.attention_interface_1.output.save()
            attn.source.attention_interface_1.source.nn_functional_softmax_0.output.save()
    with pytest.raises(OutOfOrderError):  # the cross-attention branch never runs
        with model.trace(PROMPT):
            attn.source.transpose_0.output.save()
    with model.trace(PROMPT):  # the model is left as it was: a plain trace still runs
        out = model.output.logits.save()
    assert out.shape[-1] == model.config.vocab_size


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gpt_neox"])
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_output_attentions_matches_transformers(arch, impl):
    import torch
    import transformers as tf

    path = cached_checkpoint(arch)
    ours = mlxsight.LanguageModel(path, attn_implementation=impl)
    with ours.trace(PROMPTS, output_attentions=True):
        out = ours.output.save()
    hf = tf.AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, attn_implementation=impl).eval()
    enc = ours.tokenizer(PROMPTS, return_tensors="pt", padding=True)
    mask = enc["attention_mask"]
    with torch.no_grad():
        ref = hf(enc["input_ids"], attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                 output_attentions=True).attentions
    assert isinstance(out.attentions, tuple) and len(out.attentions) == len(ref)
    assert len(ref) == (hf.config.num_hidden_layers if impl == "eager" else 0)
    for a, b in zip(out.attentions, ref):
        assert np.abs(np.asarray(a) - b.numpy()).max() < TOL


def test_output_attentions_is_a_forward_option(gpt2_path):
    model = mlxsight.LanguageModel(gpt2_path, attn_implementation="eager")
    with model.trace(PROMPT):
        out = model.output.save()
    assert out.attentions is None and "attentions" not in out
    with model.trace() as tracer:  # an invoke's forward options apply to the batch, as in nnsight
        with tracer.invoke(PROMPT, output_attentions=True):
            weights = model.transformer.h[2].attn.output[1].save()
            attentions = model.output.attentions.save()
        with tracer.invoke("Hello"):
            pass
    assert mx.array_equal(attentions[2][:1], weights)
    with pytest.raises(TypeError, match="view='hf'"):
        with mlxsight.LanguageModel(gpt2_path, view="mlx").trace(PROMPT, output_attentions=True):
            pass


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_llama_family_attention_matches_nnsight(arch):
    import torch

    path = cached_checkpoint(arch)
    ours_model = mlxsight.LanguageModel(path, attn_implementation="eager")
    theirs_model = _nnsight(path, "eager")
    theirs_names = list(theirs_model.model.layers[0].self_attn.source.names)
    ours_names = ours_model.model.layers[0].self_attn.source.operations
    # MLX spells `view` `reshape`, `.to` `.astype`, has no `contiguous`, and updates mlx-lm's cache
    spelled = ("view_", "contiguous", "past_key_values_update")
    assert [n for n in theirs_names if not any(s in n for s in spelled)] == \
        [n for n in ours_names if n in theirs_names]

    def run(model, ids):
        attn = model.model.layers[1].self_attn
        with model.trace(ids):
            inner = attn.source.attention_interface_1.source
            probs = inner.nn_functional_softmax_0.output.save()
            both = attn.source.attention_interface_1.output.save()
            logits = model.output.logits.save()
        return [_np(probs), _np(both[0]), _np(both[1]), _np(logits)]

    ids = ours_model.tokenizer(PROMPT)["input_ids"]
    for a, b in zip(run(ours_model, [ids]), run(theirs_model, torch.tensor([ids]))):
        assert a.shape == b.shape and np.abs(a - b).max() < 1e-4
