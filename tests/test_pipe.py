"""``model.pipe(...)`` against transformers' own text-generation pipeline on the same tiny checkpoint."""

import pytest

import mlxsight
from mlxsight.pipeline import pipeline_settings
from tiny_models import cached_checkpoint

# A plain template (the tiny tokenizers have none): every turn tagged, the reply prompted.
TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")
CHAT = [{"role": "user", "content": "Hello there"}]
ASSISTANT_STARTED = CHAT + [{"role": "assistant", "content": "The quick"}]


@pytest.fixture(scope="module")
def both():
    """(mlxsight model, transformers' text-generation pipeline) on one checkpoint."""
    import torch
    import transformers as tf

    path = cached_checkpoint("gpt2")
    lm = mlxsight.LanguageModel(str(path))
    lm.tokenizer.chat_template = TEMPLATE
    tok = tf.AutoTokenizer.from_pretrained(path)
    tok.chat_template = TEMPLATE
    hf = tf.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return lm, tf.pipeline("text-generation", model=hf, tokenizer=tok)


CASES = [
    ("The quick brown fox", dict(max_new_tokens=5, do_sample=False)),
    (["Hello, world!", "The Eiffel Tower is in"], dict(max_new_tokens=4, do_sample=False)),
    ("Hello", dict(max_new_tokens=4, num_beams=3, num_return_sequences=2, do_sample=False)),
    ("Hello", dict(max_new_tokens=4, do_sample=False, return_full_text=False)),
    ("Hello", dict(max_new_tokens=3, do_sample=False, return_tensors=True)),
    (CHAT, dict(max_new_tokens=4, do_sample=False)),
    (ASSISTANT_STARTED, dict(max_new_tokens=4, do_sample=False)),
    ([CHAT, ASSISTANT_STARTED], dict(max_new_tokens=3, do_sample=False)),
]


@pytest.mark.parametrize("inputs,kw", CASES, ids=range(len(CASES)))
def test_pipe_returns_the_pipelines_records(both, inputs, kw):
    import torch

    lm, pipe = both
    with torch.no_grad():
        expected = pipe(inputs, **kw)
    assert lm.pipe(inputs, **kw) == expected
    with lm.pipe(inputs, **kw) as tracer:
        records = tracer.result.save()
    assert records == expected


def test_traced_pipe_sees_the_rows_and_invokes_batch_the_prompts(both):
    import torch

    lm, pipe = both
    with lm.pipe(max_new_tokens=3, do_sample=False, num_beams=2) as tracer:
        with tracer.invoke("Hello, world!"):
            first = lm.transformer.h[0].output.save()
        with tracer.invoke("The quick brown fox"):
            second = lm.transformer.h[0].output.save()
        with tracer.invoke():
            records = tracer.result.save()
    assert first.shape[0] == second.shape[0] == 2  # each prompt's two beams
    with torch.no_grad():
        assert records == pipe(["Hello, world!", "The quick brown fox"], max_new_tokens=3, do_sample=False,
                               num_beams=2)


@pytest.mark.parametrize("kw", [dict(), dict(do_sample=False), dict(max_new_tokens=7, top_k=3),
                                dict(max_length=30), dict(temperature=1.3, num_beams=1)])
def test_pipeline_generation_defaults_are_transformers(both, kw):
    """What generate() gets: the call's settings, the checkpoint's, then the pipeline's defaults
    (256 new tokens, sampling at 0.7, the tokenizer's pad id) as transformers' pipeline merges them."""
    lm, pipe = both
    expected = {k: v for k, v in pipe._prepare_generate_kwargs(dict(kw)).items()}
    got = pipeline_settings(lm, dict(kw))
    set_by_checkpoint = lm.generation_config.set_values().keys()
    expected_from_pipe = {k: v for k, v in expected.items() if k not in set_by_checkpoint}
    assert {k: got[k] for k in expected_from_pipe} == expected_from_pipe


def test_the_checkpoints_settings_beat_the_pipelines_defaults(both):
    lm, _ = both
    config = lm.generation_config
    try:
        config.do_sample, config.max_new_tokens = False, 5
        settings = pipeline_settings(lm, {})
        assert settings["do_sample"] is False and settings["max_new_tokens"] == 5
        assert "temperature" not in settings  # not sampling: the pipeline's temperature does not apply
    finally:
        config.do_sample = config.max_new_tokens = None
