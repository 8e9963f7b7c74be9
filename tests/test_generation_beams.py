"""Beam search and the checkpoint's generation config, checked token for token against
transformers' own ``generate`` on the same tiny checkpoints; ``tracer.stop()`` across invokes."""

import warnings

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mlxsight
from mlxsight.errors import OutOfOrderError
from mlxsight.generation_config import GenerationConfig
from tiny_models import cached_checkpoint, corpus

PROMPTS = ["Hello, world!", "The Eiffel Tower is in the city of", "The quick brown fox", "Once"]


@pytest.fixture(scope="module", params=[("gpt2", "hf"), ("llama", "hf"), ("llama", "mlx")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def pair(request):
    """(mlxsight model, transformers model, transformers tokenizer) on one checkpoint."""
    import torch
    import transformers as tf

    arch, view = request.param
    path = cached_checkpoint(arch)
    lm = mlxsight.LanguageModel(str(path), view=view)
    hf = tf.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tok = tf.AutoTokenizer.from_pretrained(path)
    tok.pad_token = tok.pad_token or tok.eos_token
    tok.padding_side = "left"
    return lm, hf, tok


def reference(pair, prompts, **kw):
    import torch

    _, hf, tok = pair
    with torch.no_grad():
        return hf.generate(**tok(prompts, return_tensors="pt", padding=True), do_sample=False, **kw).tolist()


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_beam_search_equals_transformers(pair, data):
    """Prompts (padded batches too), beam counts, lengths, length penalties, early stopping modes,
    returned sequences and end-of-sequence ids drawn from what the model generates (so beams end)."""
    lm = pair[0]
    prompts = data.draw(st.lists(st.sampled_from(PROMPTS + corpus(20)), min_size=1, max_size=2), "prompts")
    beams = data.draw(st.integers(2, 4), "num_beams")
    kw = dict(num_beams=beams, max_new_tokens=data.draw(st.integers(1, 7), "max_new_tokens"),
              length_penalty=data.draw(st.sampled_from([1.0, 0.5, 2.0, -1.0]), "length_penalty"),
              early_stopping=data.draw(st.sampled_from([False, True, "never"]), "early_stopping"),
              num_return_sequences=data.draw(st.integers(1, beams), "num_return_sequences"))
    free = reference(pair, prompts, **kw)
    width = len(lm.tokenizer(prompts, padding=True)["input_ids"][0])
    generated = sorted({t for row in free for t in row[width:]})
    if generated and data.draw(st.booleans(), "end early"):
        kw["eos_token_id"] = data.draw(st.lists(st.sampled_from(generated), min_size=1, max_size=2, unique=True))
    out = lm.generate(prompts if len(prompts) > 1 else prompts[0], do_sample=False, **kw)
    assert out.tolist() == reference(pair, prompts, **kw)


def blocks(lm):
    return lm.transformer.h if hasattr(lm, "transformer") else lm.model.layers


def hidden(value):
    return value[0] if isinstance(value, tuple) else value


def logits(value):
    return getattr(value, "logits", value)


def test_traced_beams_are_the_rows_and_the_result_is_transformers(pair):
    lm = pair[0]
    layers = blocks(lm)
    n = len(lm.tokenizer(PROMPTS[1])["input_ids"])
    with lm.generate(PROMPTS[1], max_new_tokens=4, num_beams=3) as tracer:
        first = layers[-1].output.save()
        shapes = mlxsight.save([])
        for _ in tracer.iter[:4]:
            shapes.append(lm.output.shape if lm.view == "mlx" else lm.output.logits.shape)
        ids = tracer.result.save()
    assert ids.tolist() == reference(pair, [PROMPTS[1]], max_new_tokens=4, num_beams=3)
    assert hidden(first).shape[:2] == (3, n)  # one prompt, three beams: three rows
    assert [tuple(s[:2]) for s in shapes] == [(3, n if lm.view == "mlx" else 1)] + [(3, 1)] * 3
    # the prefill runs every beam on the same prompt: each row is the plain forward's row
    with lm.trace(PROMPTS[1]):
        plain = layers[-1].output.save()
    for row in range(3):
        assert np.allclose(np.array(hidden(first)[row]), np.array(hidden(plain)[0]), atol=1e-5)


def test_each_invoke_sees_its_own_beams(pair):
    """mlxsight's choice (docs/compatibility.md): nnsight serves every invoke all the beams."""
    lm = pair[0]
    with lm.generate(max_new_tokens=3, num_beams=2) as tracer:
        with tracer.invoke(PROMPTS[0]):
            a = lm.output.save()
        with tracer.invoke(PROMPTS[2]):
            b = lm.output.save()
        with tracer.invoke():
            ids = tracer.result.save()
    assert ids.tolist() == reference(pair, [PROMPTS[0], PROMPTS[2]], max_new_tokens=3, num_beams=2)
    for prompt, got in ((PROMPTS[0], logits(a)), (PROMPTS[2], logits(b))):
        assert got.shape[0] == 2
        with lm.trace(prompt):
            alone = lm.output.save()
        for row in range(2):
            assert np.allclose(np.array(got[row, -1]), np.array(logits(alone)[0, -1]), atol=1e-4)


def test_generation_config_lends_generate_its_defaults(pair):
    lm = pair[0]
    config = lm.generation_config
    assert config.num_beams is None and config.eos_token_id == lm.tokenizer.eos_token_id
    try:
        config.num_beams, config.num_return_sequences = 3, 2
        out = lm.generate(PROMPTS[1], max_new_tokens=3)
        assert out.tolist() == reference(pair, [PROMPTS[1]], max_new_tokens=3, num_beams=3, num_return_sequences=2)
        # the call's own settings win over the checkpoint's
        greedy = lm.generate(PROMPTS[1], max_new_tokens=3, num_beams=1, num_return_sequences=1)
        assert greedy.tolist() == reference(pair, [PROMPTS[1]], max_new_tokens=3)
        # a passed GenerationConfig wins over the checkpoint's, the call over both
        passed = lm.generate(PROMPTS[1], generation_config=GenerationConfig(num_beams=2, max_new_tokens=2),
                             num_return_sequences=1)
        assert passed.tolist() == reference(pair, [PROMPTS[1]], max_new_tokens=2, num_beams=2)
    finally:
        config.num_beams = config.num_return_sequences = None


def test_min_new_tokens_holds_off_the_end(pair):
    lm = pair[0]
    free = reference(pair, [PROMPTS[0]], max_new_tokens=6)[0]
    width = len(lm.tokenizer(PROMPTS[0])["input_ids"])
    eos = free[width]  # the first token generated: without min_new_tokens the row ends at once
    for kw in (dict(), dict(num_beams=2)):
        out = lm.generate(PROMPTS[0], max_new_tokens=6, min_new_tokens=3, eos_token_id=eos, **kw)
        assert out.tolist() == reference(pair, [PROMPTS[0]], max_new_tokens=6, min_new_tokens=3, eos_token_id=eos,
                                         **kw)


def test_generation_config_is_read_from_the_checkpoint(tmp_path):
    import json
    import shutil

    path = tmp_path / "ck"
    shutil.copytree(cached_checkpoint("llama"), path)
    (path / "generation_config.json").write_text(json.dumps({"num_beams": 2, "max_new_tokens": 4,
                                                             "eos_token_id": 1, "_from_model_config": True}))
    lm = mlxsight.LanguageModel(str(path))
    assert lm.generation_config.num_beams == 2 and lm.generation_config.max_new_tokens == 4
    assert lm.generation_config.do_sample is None
    out = lm.generate(PROMPTS[1])
    import torch
    import transformers as tf

    hf = tf.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    enc = tf.AutoTokenizer.from_pretrained(path)(PROMPTS[1], return_tensors="pt")
    with torch.no_grad():
        assert out.tolist() == hf.generate(**enc).tolist()  # both from the checkpoint's settings alone
    (path / "generation_config.json").unlink()
    assert mlxsight.LanguageModel(str(path)).generation_config.eos_token_id == lm.tokenizer.eos_token_id


def test_beam_search_refusals_are_transformers(pair):
    lm = pair[0]
    with pytest.raises(ValueError, match="has to be smaller or equal to `num_beams`"):
        lm.generate(PROMPTS[0], num_beams=2, num_return_sequences=3)
    with pytest.raises(ValueError, match="`streamer` cannot be used with beam search"):
        lm.generate(PROMPTS[0], num_beams=2, streamer=object())
    with pytest.raises(NotImplementedError, match="beam sampling"):
        lm.generate(PROMPTS[0], num_beams=2, do_sample=True)
    with lm.generate(PROMPTS[0], max_new_tokens=2, num_beams=2):
        with pytest.raises(mlxsight.errors.ModuleNotCalledError):
            lm.generator.streamer.output  # transformers runs beam search without a streamer


# -- tracer.stop() in one invoke ---------------------------------------------------------------

def test_a_stop_ends_the_run_after_its_step_and_serves_the_sibling_there(stories):
    with pytest.warns(UserWarning, match="never reached"):  # an open loop outruns the run: nnsight warns
        with stories.generate(max_new_tokens=8) as tracer:
            with tracer.invoke("Once upon a time"):
                free = mlxsight.save([])
                for _ in tracer.all():
                    free.append(stories.output[0, -1].argmax(-1))
    with pytest.warns(UserWarning, match="never reached"):
        with stories.generate(max_new_tokens=8) as tracer:
            with tracer.invoke("Once upon a time"):
                stopping = mlxsight.save([])
                for _ in tracer.all():
                    stopping.append(stories.output[0, -1].argmax(-1))
                    if len(stopping) == 3:
                        tracer.stop()
            with tracer.invoke("Once upon a time"):
                sibling = mlxsight.save([])
                for _ in tracer.all():
                    sibling.append(stories.output[0, -1].argmax(-1))
                after_the_loop = mlxsight.save([1])  # noqa: F841 - never recorded: the loop was cut short
    assert [int(v) for v in stopping] == [int(v) for v in sibling] == [int(v) for v in free[:3]]
    assert "after_the_loop" not in dir()


def test_a_plain_read_past_a_siblings_stop_is_out_of_order(stories):
    with pytest.raises(OutOfOrderError, match="already ran past it"):
        with stories.trace() as tracer:
            with tracer.invoke("Once upon a time"):
                stories.model.layers[0].output.save()
                tracer.stop()
            with tracer.invoke("Once upon a time"):
                stories.model.layers[1].output.save()
    with stories.trace() as tracer:  # up to the stop, a sibling is served
        with tracer.invoke("Once upon a time"):
            stories.model.layers[1].output.save()
            tracer.stop()
        with tracer.invoke("Once upon a time"):
            early = stories.model.layers[0].output.save()
    with stories.trace("Once upon a time"):
        ref = stories.model.layers[0].output.save()
    assert mx.allclose(early, ref, atol=1e-5)  # the same row, batched with its sibling


def test_a_stopped_generation_streams_no_token_after_the_stop(stories):
    class Streamer:
        def __init__(self):
            self.puts = []

        def put(self, ids):
            self.puts.append(ids.shape)

        def end(self):
            self.puts.append("end")

    streamer = Streamer()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing dangles: the stopping invoke is the only one
        with stories.generate("Once upon a time", max_new_tokens=6, streamer=streamer) as tracer:
            seen = mlxsight.save([])
            for step in tracer.iter[:6]:
                seen.append(stories.model.layers[0].output)
                if step == 2:
                    tracer.stop()
    # the prompt, then the tokens of steps 0 and 1: step 2's forward was the last, nothing ended it
    assert len(seen) == 3
    assert len(streamer.puts) == 3 and "end" not in streamer.puts


def test_beams_stop_and_pipe_crosscheck_against_nnsight(tmp_path):
    """The same nnsight script on both backends (``compat crosscheck``): per-step beam hidden states
    after the cache follows the beams, the beam ids of a batch, a stop's sibling served that step
    (with the warning) and pipe's records."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "table.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    script = root / "tests" / "compat_scripts" / "beams_pipe.py"
    proc = subprocess.run([sys.executable, "-m", "compat", "crosscheck", str(script), str(cached_checkpoint("llama")),
                           "--json", str(out)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = json.dumps(json.loads(out.read_text()))
    assert "beam_ids" in text and "sibling" in text and "generated_text" in text


def test_sampling_keeps_transformers_default_top_k_of_50(stories):
    """Sampling with no ``top_k`` anywhere draws from the 50 likeliest tokens, as transformers'
    default; ``top_k=0`` lifts it (near-uniform at a high temperature: almost surely outside)."""
    with stories.trace("Once upon a time"):
        first = stories.output[0, -1].save()
    top50 = set(np.argsort(-np.array(first))[:50].tolist())
    n = len(stories.tokenizer("Once upon a time")["input_ids"])
    mx.random.seed(0)
    drawn = stories.generate("Once upon a time", max_new_tokens=1, do_sample=True, temperature=100.0,
                             num_return_sequences=64)[:, n].tolist()
    assert set(drawn) <= top50 and len(set(drawn)) > 10
    free = stories.generate("Once upon a time", max_new_tokens=1, do_sample=True, temperature=100.0,
                            num_return_sequences=64, top_k=0)[:, n].tolist()
    assert not set(free) <= top50


def test_generation_config_reads_like_transformers():
    from transformers import GenerationConfig as HFGenerationConfig

    ours, theirs = GenerationConfig(num_beams=3, eos_token_id=2), HFGenerationConfig(num_beams=3, eos_token_id=2)
    assert all(getattr(ours, k) == getattr(theirs, k) for k in ("num_beams", "eos_token_id", "do_sample",
                                                                 "max_new_tokens", "length_penalty"))
    assert ours.to_diff_dict() == {k: v for k, v in theirs.to_diff_dict().items() if k != "transformers_version"}
    assert ours.update(num_beams=2, nonsense=1) == theirs.update(num_beams=2, nonsense=1) == {"nonsense": 1}
    assert ours.num_beams == theirs.num_beams == 2


def test_the_cache_follows_the_beams_for_every_mlx_lm_cache_kind():
    from mlx_lm.models.cache import ArraysCache, KVCache, QuantizedKVCache

    from mlxsight.generation import _reorder

    index = mx.array([2, 0, 0])
    plain = KVCache()
    plain.update_and_fetch(mx.random.normal((3, 2, 4, 8)), mx.random.normal((3, 2, 4, 8)))
    quantized = QuantizedKVCache(group_size=32, bits=8)
    quantized.update_and_fetch(mx.random.normal((3, 2, 4, 64)), mx.random.normal((3, 2, 4, 64)))
    recurrent = ArraysCache(2)
    recurrent[0], recurrent[1] = mx.random.normal((3, 5)), mx.random.normal((3, 2))
    before = [np.array(plain.keys), [np.array(a) for a in quantized.keys], [np.array(a) for a in recurrent.cache]]
    _reorder([plain, quantized, recurrent], index)
    rows = [2, 0, 0]
    assert np.array_equal(np.array(plain.keys), before[0][rows])
    assert all(np.array_equal(np.array(a), b[rows]) for a, b in zip(quantized.keys, before[1]))
    assert all(np.array_equal(np.array(a), b[rows]) for a, b in zip(recurrent.cache, before[2]))
    assert plain.offset == 4  # what is not per row stays
