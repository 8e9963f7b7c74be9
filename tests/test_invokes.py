"""Batched invokes: one forward, each invoke sees its own rows, equal to separate traces."""

import mlx.core as mx
import pytest
from hypothesis import given, settings, strategies as st

PROMPTS = ["Once upon a time there was a dog", "Lily", "The sun was hot and the sky", "Tom and Sue went"]


def solo(lm, text, layer):
    with lm.trace(text):
        h = lm.model.layers[layer].output.save()
        out = lm.output.save()
    return h, out


@settings(max_examples=8, deadline=None)
@given(st.lists(st.sampled_from(PROMPTS), min_size=2, max_size=4), st.integers(0, 4))
def test_batched_invokes_equal_separate_traces(stories, texts, layer):
    saved = []  # created before the trace: filled in place, as in nnsight
    with stories.trace() as tracer:
        for t in texts:
            with tracer.invoke(t):
                saved.append((stories.model.layers[layer].output.save(), stories.output.save()))
    width = max(len(stories.tokenizer(t)["input_ids"]) for t in texts)
    for t, (h, out) in zip(texts, saved):
        ref_h, ref_out = solo(stories, t, layer)
        n = ref_h.shape[1]
        assert h.shape == (1, width, 64)  # rows narrowed, length stays padded (left padding)
        assert mx.allclose(h[:, width - n:], ref_h, atol=1e-5)
        assert mx.allclose(out[:, width - n:], ref_out, atol=1e-4)


def test_empty_invoke_sees_whole_batch_and_later_edits(stories):
    with stories.trace() as tracer:
        with tracer.invoke(PROMPTS[0]):
            a = stories.model.layers[1].output.save()
            stories.model.layers[1].output[:] = 0
        with tracer.invoke(PROMPTS[2]):
            b = stories.model.layers[1].output.save()
        with tracer.invoke():
            full = stories.model.layers[1].output.save()
    assert full.shape[0] == 2
    assert float(mx.abs(a).max()) == 0  # edited in place after the save: shows through
    assert float(mx.abs(full[0]).max()) == 0
    assert mx.array_equal(full[1:], b)
    assert float(mx.abs(b).max()) > 0


def test_patching_across_invokes(stories):
    clean = "Once upon a time, there was a little girl named Lily. She was very happy. One day,"
    corrupt = clean.replace("Lily", "Tim")
    assert len(stories.tokenizer(clean)["input_ids"]) == len(stories.tokenizer(corrupt)["input_ids"])
    with stories.trace() as tracer:
        with tracer.invoke(clean):
            h_clean = stories.model.layers[2].output[:, 14]
        with tracer.invoke(corrupt):
            stories.model.layers[2].output[:, 14] = h_clean
            patched = stories.output.save()
    with stories.trace(clean):
        h = stories.model.layers[2].output[:, 14].save()
    with stories.trace(corrupt):
        stories.model.layers[2].output[:, 14] = h
        ref = stories.output.save()
    assert mx.allclose(patched, ref, atol=1e-5)


def test_list_of_prompts_is_one_invoke_with_several_rows(stories):
    with stories.trace(PROMPTS[:3]):
        h = stories.model.layers[0].output.save()
    assert h.shape[0] == 3
    ref, _ = solo(stories, PROMPTS[1], 0)
    n = ref.shape[1]
    assert mx.allclose(h[1:2, h.shape[1] - n:], ref, atol=1e-5)


def test_reads_outside_invokes_need_an_input(stories):
    import mlxsight

    with pytest.raises(mlxsight.TraceError, match="inside `with tracer.invoke"):
        with stories.trace():
            stories.model.layers[0].output
    with pytest.raises(ValueError, match="needs an input"):
        with stories.trace():
            pass


def test_invoke_inside_a_trace_with_an_input_is_refused_like_nnsight(stories):
    with pytest.raises(ValueError, match="Cannot invoke while the model is already running"):
        with stories.trace("Lily") as tracer:
            with tracer.invoke("Tom"):
                pass
