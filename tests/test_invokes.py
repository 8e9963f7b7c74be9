"""Batched invokes: one forward, each invoke sees its own rows, equal to separate traces."""

import mlx.core as mx
import pytest

import mlxsight
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
            h = stories.model.layers[2].output  # asked for first: the clean body has bound h_clean there
            h[:, 14] = h_clean
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


# -- rows padded to the batch while recording (nnsight serves each invoke its rows of the padded batch) --

def test_shorter_invokes_value_written_into_a_longer_invoke(stories):
    """docs/usage/barrier.md's embedding transfer: the shorter invoke's value is as wide as the
    batch, pads included, so it fits the longer invoke; the longer one runs on it (as nnsight)."""
    short, long_ = PROMPTS[1], PROMPTS[0]
    width = len(stories.tokenizer(long_)["input_ids"])
    n = len(stories.tokenizer(short)["input_ids"])
    with stories.trace() as tracer:
        with tracer.invoke(short):
            embeddings = stories.model.embed_tokens.output
            donor = embeddings.save()
        with tracer.invoke(long_):
            assert stories.model.embed_tokens.output.shape == (1, width, 64)  # the point first, as in nnsight
            stories.model.embed_tokens.output = embeddings
            out = stories.output.save()
    # independent reference: the padded ids' embeddings through the model itself
    pad = stories.tokenizer.pad_token_id
    ids = mx.array([[pad] * (width - n) + stories.tokenizer(short)["input_ids"]])
    assert donor.shape == (1, width, 64)
    assert mx.array_equal(donor, stories.mlx_model.model.embed_tokens(ids))
    with stories.trace(ids):
        ref = stories.output.save()  # the same ids, unpadded: every position attended
    assert mx.allclose(out, ref, atol=1e-5)


def test_values_of_invokes_of_different_lengths_combine(stories):
    """An operation between a shorter, earlier invoke's value and a longer one's: both padded to the
    batch, as in nnsight (the shorter one's meta is widened when they meet)."""
    with stories.trace() as tracer:
        with tracer.invoke(PROMPTS[1]):
            a = stories.model.layers[0].output
            a_saved = a.save()
        with tracer.invoke(PROMPTS[0]):
            b = stories.model.layers[0].output.save()
            diff = (b - a).save()
            assert diff.shape == b.shape
    assert mx.allclose(diff, b - a_saved)
    with pytest.raises(mlxsight.TraceError, match="shape mismatch"):  # a real mismatch is still refused
        with stories.trace() as tracer:
            with tracer.invoke(PROMPTS[1]):
                a = stories.model.layers[0].output
            with tracer.invoke(PROMPTS[0]):
                stories.model.layers[0].output = a[:, :1]


# -- values needed while recording: computed on the rows they depend on -------------------------

def _forwarded_rows(lm, monkeypatch) -> list:
    """Spy on the driver: the number of rows of each forward run."""
    rows, forward = [], lm._driver.forward

    def spy(batch):
        rows.append(lm._driver.rows(batch))
        return forward(batch)

    monkeypatch.setattr(lm._driver, "forward", spy)
    return rows


@settings(max_examples=6, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(PROMPTS), st.integers(0, 4), st.booleans()), min_size=2, max_size=6))
def test_item_in_every_invoke_equals_the_whole_batch_and_runs_each_invokes_rows(stories, specs):
    """`.item()` in each invoke (docs/patterns/ablation.md's head sweep): the number equals the same
    value computed in the trace's one forward, patched from another invoke or not, and each is
    computed on the rows it needs (its own, a donor's, the widest so far), not the batch so far."""
    monkeypatch = pytest.MonkeyPatch()
    rows = _forwarded_rows(stories, monkeypatch)
    items, saved, recording = [], [], []
    try:
        with stories.trace() as tracer:
            with tracer.invoke(PROMPTS[2]):
                donor = stories.model.layers[0].output[:, -1, :]
            for text, layer, patch in specs:
                with tracer.invoke(text):
                    if patch:
                        h0 = stories.model.layers[0].output  # the point first: the donor body has bound donor there
                        h0[:, -1, :] = donor
                    stories.model.layers[layer].output[:, -1, :8] = 0
                    p = stories.output[0, -1].softmax(-1)[3]
                    items.append(p.item())
                    recording[:] = rows  # the forwards so far (bodies run as workers at the block's exit)
                    saved.append(p.save())
    finally:
        monkeypatch.undo()
    assert items == pytest.approx([float(s) for s in saved], rel=1e-5, abs=1e-7)
    # while recording, no forward (values, structures) runs more than the donor's, its own and the
    # widest rows, however many invokes came before; the trace's own run is the whole batch
    assert recording and max(recording) <= 3
    assert rows[-1] == len(specs) + 1
