"""Patching, attribution and steering give the same numbers on mlxsight and on nnsight (torch),
the bundled stories260K checkpoint loaded by each."""

import mlxsight  # noqa: F401  (mlx before nnsight/transformers, always)
import numpy as np
import pytest

from mlxsight import tools

CLEAN = "Once upon a time, there was a little girl named Lily. She was very happy. One day,"
CORRUPT = CLEAN.replace("Lily", "Tim")
HAPPY = ["She was very happy and smiled.", "They laughed and played all day."]
SAD = ["She was very sad and cried.", "They cried and were sad all day."]
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # transformers' loading notices


@pytest.fixture(scope="module")
def models(stories_path):
    nnsight = pytest.importorskip("nnsight")
    import torch

    torch_model = nnsight.LanguageModel(str(stories_path), dispatch=True, dtype=torch.float32)
    return mlxsight.LanguageModel(stories_path), torch_model


def metric(model):
    tok = model.tokenizer
    return tools.logit_diff(tok.convert_tokens_to_ids("▁Lily"), tok.convert_tokens_to_ids("▁Tim"))


@pytest.mark.parametrize("component, kwargs", [("resid", {}), ("attn", {"positions": [14, -1]}),
                                               ("mlp", {"layers": [0, 4]}),
                                               ("heads", {"layers": [1, 3], "positions": [14]})])
def test_activation_patching(models, component, kwargs):
    mlx_model, torch_model = models
    a, b = (tools.activation_patching(m, CLEAN, CORRUPT, metric(m), component=component, progress=False, **kwargs)
            for m in models)
    assert a.scores.shape == b.scores.shape and a.tokens == b.tokens
    np.testing.assert_allclose(a.scores, b.scores, atol=5e-5)
    assert (a.clean, a.corrupted) == pytest.approx((b.clean, b.corrupted), abs=5e-5)
    assert np.ptp(a.scores) > 0.2  # not vacuous


@pytest.mark.parametrize("component", ["resid", "attn", "heads"])
def test_attribution_patching(models, component):
    a, b = (tools.attribution_patching(m, CLEAN, CORRUPT, metric(m), component=component, layers=[0, 2, 4],
                                       progress=False) for m in models)
    np.testing.assert_allclose(a.scores, b.scores, atol=5e-5)
    assert a.method == b.method == "attribution"


def test_steering(models):
    va, vb = (tools.steering_vector(m, HAPPY, SAD, layer=3) for m in models)
    np.testing.assert_allclose(va.vector, vb.vector, atol=1e-5)
    ra, rb = (tools.generate_steered(m, "Once upon a time", v, scales=[0.0, 2.0], max_new_tokens=24)
              for m, v in zip(models, (va, vb)))
    assert ra.texts == rb.texts and ra.texts[0] != ra.texts[1]
    prompt = "Once upon a time, there was a little girl named Lily. She felt"
    sa, sb = (tools.scale_search(m, prompt, v, tools.kl_div(), target=0.1, high=8.0)
              for m, v in zip(models, (va, vb)))
    assert sa.scale == sb.scale and sa.value == pytest.approx(sb.value, abs=1e-5)
