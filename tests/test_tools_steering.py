"""Steering vectors, steered generation and scale search against plain traces and generations."""

import re

import mlxsight
import mlx.core as mx
import numpy as np
import pytest

from mlxsight import tools

HAPPY = ["She was very happy and smiled.", "They laughed and played all day."]
SAD = ["She was very sad and cried.", "They cried and were sad all day."]


@pytest.fixture(scope="module")
def hf(stories_path):
    return mlxsight.LanguageModel(stories_path)


def layer_output(lm, prompt, layer):
    with lm.trace(prompt):
        h = lm.model.layers[layer].output.save()
    return np.array(h)[0]


@pytest.mark.parametrize("position", ["mean", "last", 2])
def test_vector_is_the_contrastive_mean_difference(hf, position):
    v = tools.steering_vector(hf, HAPPY, SAD, layer=3, position=position)

    def pick(h):
        return h.mean(0) if position == "mean" else h[-1 if position == "last" else position]

    expected = (np.mean([pick(layer_output(hf, p, 3)) for p in HAPPY], 0)
                - np.mean([pick(layer_output(hf, p, 3)) for p in SAD], 0))
    np.testing.assert_allclose(v.vector, expected, rtol=1e-5, atol=1e-6)
    assert v.layer == 3 and v.n_pairs == 2 and np.asarray(v).shape == (64,) and v.norm > 0.1


def test_unpaired_prompts_are_rejected(hf):
    with pytest.raises(ValueError, match="as many positive as negative"):
        tools.steering_vector(hf, HAPPY, SAD[:1], layer=1)


def reference_generation(lm, prompt, vector, scale, layer, n, positions):
    """One plain traced generation per scale, the vector added by hand at every step."""
    add = mx.array(scale * np.asarray(vector, np.float32))
    with lm.generate(prompt, max_new_tokens=n) as tracer:
        for step in tracer.iter[:n]:
            out = lm.model.layers[layer].output
            if step == 0 and positions == "last":
                out[:, -1] += add
            elif step == 0 and positions != "all":
                for p in positions:
                    out[:, p] += add
            elif step == 0 or positions in ("all", "last"):
                out[:] += add
        ids = tracer.result.save()
    return lm.tokenizer.decode(np.array(ids)[0].tolist(), skip_special_tokens=True)


@pytest.mark.parametrize("positions", ["all", "last", [0, 2]])
def test_generation_equals_hand_steered_generation(hf, positions):
    v = tools.steering_vector(hf, HAPPY, SAD, layer=2)
    res = tools.generate_steered(hf, "Once upon a time", v, scales=[0.0, 1.5, 4.0], positions=positions,
                                 max_new_tokens=20)
    assert res.layers == [2] and res.scales == [0.0, 1.5, 4.0] and res.prompt == "Once upon a time"
    plain = hf.generate("Once upon a time", max_new_tokens=20)
    assert res.texts[0] == hf.tokenizer.decode(plain[0].tolist(), skip_special_tokens=True)
    for scale, text in zip(res.scales[1:], res.texts[1:]):
        assert text == reference_generation(hf, "Once upon a time", v, scale, 2, 20, positions)
    if isinstance(positions, str):
        assert res.texts[2] != res.texts[0]  # the vector does something at scale 4
    assert res[1.5] == res.texts[1] and res.texts[1] == "Once upon a time" + res.completions[1]


def test_steer_at_several_layers(stories):
    """mlx-lm's own tree; two layers; ``steer`` is one scale of ``generate_steered``."""
    v = np.ones(64, np.float32) * 0.3
    text = tools.steer(stories, "Once upon a time", v, scale=1.0, layer=[1, 3], max_new_tokens=12)
    with stories.generate("Once upon a time", max_new_tokens=12) as tracer:
        for _ in tracer.iter[:12]:
            stories.model.layers[1].output[:] += mx.array(v)
            stories.model.layers[3].output[:] += mx.array(v)
        ids = tracer.result.save()
    assert text == stories.tokenizer.decode(np.array(ids)[0].tolist(), skip_special_tokens=True)


def kl_at(lm, prompt, vector, layer, scale):
    with lm.trace(prompt):
        base = lm.output.logits[0, -1].save()
    with lm.trace(prompt):
        lm.model.layers[layer].output[:] += mx.array(scale * np.asarray(vector))
        steered = lm.output.logits[0, -1].save()
    p, q = np.array(base).astype(np.float64), np.array(steered).astype(np.float64)
    p, q = p - np.logaddexp.reduce(p), q - np.logaddexp.reduce(q)
    return float((np.exp(p) * (p - q)).sum())


def test_scale_search_brackets_the_target(hf):
    prompt = "Once upon a time, there was a little girl named Lily. She felt"
    v = tools.steering_vector(hf, HAPPY, SAD, layer=3)
    res = tools.scale_search(hf, prompt, v, tools.kl_div(), target=0.1, high=8.0, tol=0.01)
    assert res.increasing and 0 < res.scale < 8
    assert res.value == pytest.approx(kl_at(hf, prompt, v, 3, res.scale), rel=1e-3, abs=1e-6)
    assert res.value >= 0.1 > kl_at(hf, prompt, v, 3, res.scale - 0.01)
    assert len(res.evaluations) <= 3 + int(np.ceil(np.log2(8 / 0.01)))
    unreachable = tools.scale_search(hf, prompt, v, tools.kl_div(), target=1e6, high=2.0)
    assert unreachable.scale is None


def test_demo_prints_a_coherent_steered_story(hf, capsys):
    from mlxsight import demo

    demo.steering(hf)
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if re.match(r"\s*scale [\d.]+\s*:", line)]
    assert len(rows) == 2 and "scale 0.0" in rows[0]
    steered = rows[1]
    words = re.findall(r"[a-z]+", steered.lower())
    assert "happy" in words and len(words) > 30
    assert not any(words[i] == words[i + 1] == words[i + 2] for i in range(len(words) - 2))  # no repeated word
