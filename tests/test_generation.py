"""Generation with interventions, checked against mlx-lm's own loop and an eager cached loop."""

import warnings

import mlx.core as mx
import pytest
from mlx_lm.generate import generate_step
from mlx_lm.models.base import create_attention_mask

import mlxsight

PROMPT = "Once upon a time"


def mlx_lm_greedy(lm, text, n):
    ids = mx.array(lm.tokenizer(text)["input_ids"])
    return [int(t) for t, _ in zip((t for t, _ in generate_step(ids, lm.mlx_model, max_tokens=n)), range(n))]


def eager_generate(lm, text, n, edit=None):
    """A hand-written KV-cached greedy loop over mlx-lm's layers, with ``edit(step, layer, h)``."""
    m = lm.mlx_model
    cache = m.make_cache()
    x = mx.array([lm.tokenizer(text)["input_ids"]])
    tokens = []
    for step in range(n):
        h = m.model.embed_tokens(x)
        mask = create_attention_mask(h, cache[0])
        for i, (layer, c) in enumerate(zip(m.model.layers, cache)):
            h = layer(h, mask, cache=c)
            h = edit(step, i, h) if edit else h
        logits = m.model.embed_tokens.as_linear(m.model.norm(h))
        t = logits[:, -1].argmax(-1)
        tokens.append(int(t[0]))
        x = t[:, None]
    return tokens


def test_plain_generation_equals_mlx_lm(stories):
    n = 16
    ids = stories.tokenizer(PROMPT)["input_ids"]
    out = stories.generate(PROMPT, max_new_tokens=n)
    assert out[0, len(ids):].tolist() == mlx_lm_greedy(stories, PROMPT, n)
    with stories.generate(PROMPT, max_new_tokens=n) as tracer:
        traced = tracer.result.save()
    assert mx.array_equal(traced, out)
    assert traced[0, :len(ids)].tolist() == ids


def test_per_step_reads_and_plain_reads_bind_to_step_zero(stories):
    n = 6
    ids = stories.tokenizer(PROMPT)["input_ids"]
    with stories.generate(PROMPT, max_new_tokens=n) as tracer:
        first = stories.model.layers[1].output.save()
        steps = mlxsight.save([])
        shapes = mlxsight.save([])  # a plain list made in the block is not there after it unless saved (nnsight)
        for step in tracer.iter[:n]:  # bounded: every step happens, so the code after runs
            shapes.append(stories.model.layers[1].output.shape)
            steps.append(stories.output[0, -1].argmax())
        result = tracer.result.save()
    assert first.shape == (1, len(ids), 64)
    assert shapes == [(1, len(ids), 64)] + [(1, 1, 64)] * (n - 1)
    assert [int(s) for s in steps] == result[0, len(ids):].tolist()
    with stories.trace(PROMPT):
        ref = stories.model.layers[1].output.save()
    assert mx.array_equal(first, ref)


def test_steering_every_step_matches_eager_and_changes_the_text(stories):
    n = 12
    happy = stories.tokenizer.convert_tokens_to_ids("▁happy")
    vec = stories.mlx_model.model.embed_tokens.weight[happy] * 3.0

    def edit(step, layer, h):
        if layer == 2:
            h = mx.array(h)
            h[:, -1] = h[:, -1] + vec
        return h

    with stories.generate(PROMPT, max_new_tokens=n) as tracer:
        for step in tracer.iter[:n]:
            stories.model.layers[2].output[:, -1] += vec
        steered = tracer.result.save()
    new = steered[0, -n:].tolist()
    assert new == eager_generate(stories, PROMPT, n, edit)
    assert new.count(happy) >= 3 > eager_generate(stories, PROMPT, n).count(happy)


def test_iter_slices_ints_and_lists(stories):
    with stories.generate(PROMPT, max_new_tokens=6) as tracer:
        picked = mlxsight.save([])
        for step in tracer.iter[[0, 3]]:
            picked.append(stories.model.layers[0].output.shape)
        for step in tracer.iter[4]:
            last = stories.output.save()
        for step in tracer.iter[1:3]:
            picked.append(step)
    assert picked == [(1, 5, 64), (1, 1, 64), 1, 2]
    assert last.shape == (1, 1, 512)
    with pytest.raises(ValueError, match="non-negative"):
        with stories.generate(PROMPT, max_new_tokens=2) as tracer:
            for step in tracer.iter[[-1]]:
                pass


def test_eos_stops_generation_and_unreached_steps_warn(stories):
    eos = stories.tokenizer.eos_token_id
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with stories.generate(max_new_tokens=8) as tracer:
            with tracer.invoke(PROMPT):
                seen = mlxsight.save([])
                for step in tracer.iter[:]:
                    if step == 2:
                        stories.output[:, -1, eos] = 1e4  # force EOS as the third new token
                    seen.append(stories.output[0, -1].argmax())
            with tracer.invoke():  # nnsight's way to run code after an open loop
                ids = tracer.result.save()
    n_prompt = len(stories.tokenizer(PROMPT)["input_ids"])
    assert ids.shape == (1, n_prompt + 3) and int(ids[0, -1]) == eos
    assert len(seen) == 3  # steps 3..7 never happened
    assert any("never reached" in str(w.message) for w in caught)


def test_batched_prompts_generate_like_solo_prompts(stories):
    prompts = ["Once upon a time", "Tom had a red ball and"]
    n = 8
    with stories.generate(max_new_tokens=n) as tracer:
        for p in prompts:
            with tracer.invoke(p):
                pass
        with tracer.invoke():
            both = tracer.result.save()
    for row, p in zip(both.tolist(), prompts):
        assert row[-n:] == mlx_lm_greedy(stories, p, n)
    width = max(len(stories.tokenizer(p)["input_ids"]) for p in prompts)
    assert both.shape == (2, width + n)


def test_streaming_gets_prompt_then_each_token(stories):
    got = []

    class Streamer:
        def put(self, ids):
            got.append(ids.tolist())

        def end(self):
            got.append("end")

    out = stories.generate(PROMPT, max_new_tokens=4, streamer=Streamer())
    ids = stories.tokenizer(PROMPT)["input_ids"]
    assert got[0] == [ids] and got[-1] == "end"
    assert [g[0] for g in got[1:-1]] == out[0, len(ids):].tolist()
    tokens = []
    stories.generate(PROMPT, max_new_tokens=3, streamer=lambda t: tokens.append(int(t[0])))
    assert tokens == out[0, len(ids):len(ids) + 3].tolist()


def test_sampling_is_seeded_and_differs_from_greedy(stories):
    mx.random.seed(3)
    a = stories.generate(PROMPT, max_new_tokens=12, do_sample=True, temperature=1.5)
    mx.random.seed(3)
    b = stories.generate(PROMPT, max_new_tokens=12, do_sample=True, temperature=1.5)
    greedy = stories.generate(PROMPT, max_new_tokens=12)
    assert mx.array_equal(a, b) and not mx.array_equal(a, greedy)


def test_hf_view_generation_keeps_one_logit_per_step_like_transformers(stories_path):
    model = mlxsight.LanguageModel(stories_path)  # the HF view
    assert model.view == "hf"
    with model.generate(["Once upon a time", "Tom had a red"], max_new_tokens=4) as tracer:
        shapes = mlxsight.save([])
        for step in tracer.iter[:4]:
            shapes.append(model.lm_head.output.shape)
        ids = tracer.result.save()
    assert shapes == [(2, 1, 512)] * 4
    plain = mlxsight.LanguageModel(stories_path, view="mlx")
    for row, prompt in zip(ids.tolist(), ["Once upon a time", "Tom had a red"]):
        assert row[-4:] == mlx_lm_greedy(plain, prompt, 4)


def test_open_loop_ends_the_block_like_nnsight(stories):
    """An open iter[:] loop waits for one step more than the run makes: nnsight warns and skips the
    code after the loop, keeping what was saved before."""
    after = []
    with pytest.warns(UserWarning, match="never reached"):
        with stories.generate(PROMPT, max_new_tokens=3) as tracer:
            logits = mlxsight.save([])
            visited = mlxsight.save([])
            for step in tracer.iter[:]:
                visited.append(step)
                logits.append(stories.output[0, -1])
            after.append(True)
    assert visited == [0, 1, 2, 3] and not after
    assert len(logits) == 3 and all(isinstance(v, mx.array) for v in logits)


def test_bounded_loop_past_the_run_ends_the_block_like_nnsight(stories):
    """nnsight's docs/usage/iteration.md: `tracer.iter[:10]` over a 3-step generation keeps the 3
    steps' values, warns naming the first step not made (`.i3`) and skips the code after the loop."""
    after = []
    with pytest.warns(UserWarning, match=r"layers.0.output.i3' was never reached"):
        with stories.generate(PROMPT, max_new_tokens=3) as tracer:
            zeroed = mlxsight.save([])
            for step in tracer.iter[:10]:
                stories.model.layers[0].output[:] = 0
                zeroed.append(step)
            after.append(True)
    assert zeroed == [0, 1, 2] and not after


def test_stop_in_one_invoke_ends_the_run_for_the_others_like_nnsight(stories_path):
    """nnsight's docs/usage/stop-and-early-exit.md: `tracer.stop()` after 3 steps in the first
    invoke; the second invoke's open loop gets the same 3 steps, then warns and ends. Each row's
    tokens are mlx-lm's greedy ones."""
    lm = mlxsight.LanguageModel(stories_path)  # the HF view: lm_head, as the page reads
    prompts = ["Once upon a time", "Tom had a red"]
    with pytest.warns(UserWarning, match=r"lm_head.output.i3' was never reached: .*tracer.stop\(\)"):
        with lm.generate(max_new_tokens=8, do_sample=False) as tracer:
            with tracer.invoke(prompts[0]):
                picks = mlxsight.save([])
                for _ in tracer.all():
                    picks.append(lm.lm_head.output[0, -1].argmax(axis=-1))
                    if len(picks) == 3:
                        tracer.stop()
                after = mlxsight.save([1])  # not reached: the stop ended this invoke's block
            with tracer.invoke(prompts[1]):
                others = mlxsight.save([])
                for _ in tracer.all():
                    others.append(lm.lm_head.output[0, -1].argmax(axis=-1))
    assert [int(t) for t in picks] == mlx_lm_greedy(lm, prompts[0], 3)
    assert [int(t) for t in others] == mlx_lm_greedy(lm, prompts[1], 3)
    assert "after" not in locals()


def test_next_deprecated_aliases_and_steps_past_the_end(stories):
    with stories.generate(PROMPT, max_new_tokens=3) as tracer:
        first = stories.model.layers[0].output.save()
        second = stories.model.layers[0].next().output.save()
        with pytest.warns(FutureWarning, match="deprecated"):
            for step in stories.iter[1:3]:
                pass
        with pytest.warns(FutureWarning, match="tracer.result"):
            ids = stories.generator.output.save()
    assert first.shape == (1, 5, 64) and second.shape == (1, 1, 64) and ids.shape == (1, 8)
    with pytest.raises(mlxsight.OutOfOrderError, match=r"i3' is never reached: .* runs 3 time"):
        with stories.generate(PROMPT, max_new_tokens=3) as tracer:
            stories.model.layers[0].next(3).output.save()


def test_a_generation_cache_holds_each_steps_entry_and_lists_their_values(stories):
    """nnsight's cache view of a module visited per step: ``len`` the steps, ``.output`` and
    ``.input`` each step's value (what the step's own reads give), ``[i]`` step ``i``'s entry."""
    with stories.generate(PROMPT, max_new_tokens=3) as tracer:
        cache = tracer.cache(modules=[stories.model.layers[1]], include_inputs=True)
        outs, ins = mlxsight.save([]), mlxsight.save([])
        for step in tracer.iter[:3]:
            ins.append(stories.model.layers[1].input)
            outs.append(stories.model.layers[1].output)
    entry = cache["model.model.layers.1"]
    assert len(entry) == len(cache.model.model.layers[1]) == 3
    assert [o.shape[1] for o in entry.output] == [len(stories.tokenizer(PROMPT)["input_ids"]), 1, 1]
    assert all(mx.array_equal(a, b) for a, b in zip(entry.output, outs))
    assert all(mx.array_equal(a, b) for a, b in zip(entry.input, ins))
    assert all(entry[i].output is entry.output[i] for i in range(3))
    assert len(entry.inputs) == 3 and all(isinstance(i, tuple) for i in entry.inputs)
    with stories.trace(PROMPT) as tracer:
        once = tracer.cache(modules=[stories.model.layers[1]])
    assert len(once["model.model.layers.1"]) == 1 and mx.array_equal(once["model.model.layers.1"].output,
                                                                        entry.output[0])


# -- steps built ahead (generation.generate_step's speculation) -------------------------------------

def _steered_run(model, n, force_eos_at=None):
    """Steering at every step, per-step saves, and an optional forced EOS; what the run returns."""
    eos = model.tokenizer.eos_token_id
    vec = model.mlx_model.model.embed_tokens.weight[model.tokenizer.convert_tokens_to_ids("▁happy")] * 2.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with model.generate(max_new_tokens=n) as tracer:
            with tracer.invoke(PROMPT):
                seen, norms = mlxsight.save([]), mlxsight.save([])
                for step in tracer.iter[:]:
                    model.model.layers[2].output[:, -1] += vec
                    norms.append(model.model.layers[3].output.norm(dim=-1))
                    if step == force_eos_at:
                        model.output[:, -1, eos] = 1e4
                    seen.append(model.output[0, -1].argmax())
            with tracer.invoke():
                ids = tracer.result.save()
    return ids.tolist(), [int(s) for s in seen], [x.tolist() for x in norms], \
        sorted(str(w.message) for w in caught)


@pytest.mark.parametrize("force_eos_at", [None, 0, 3])
def test_steps_built_ahead_give_the_run_made_step_by_step(stories, monkeypatch, force_eos_at):
    """Building step n+1 while step n computes changes nothing: tokens, per-step saves, the steps a
    forced EOS leaves unreached (their values dropped, the same warning) all equal the step-by-step run."""
    from mlxsight.generation import GenerationTracer

    calls = []
    speculation = GenerationTracer.speculation
    monkeypatch.setattr(GenerationTracer, "speculation", lambda self, r: calls.append(speculation(self, r)) or calls[-1])
    ahead = _steered_run(stories, 6, force_eos_at)
    assert calls and calls[-1] is not None  # the run did build its steps ahead
    monkeypatch.setattr(GenerationTracer, "speculation", lambda self, runner: None)
    assert ahead == _steered_run(stories, 6, force_eos_at)
    assert len(ahead[1]) == (6 if force_eos_at is None else force_eos_at + 1)


def test_a_user_function_at_a_step_turns_building_ahead_off(stories, monkeypatch):
    """A step built ahead and dropped must not have run anything outside the run's values: with a
    user function at the steps, each step is built only once the previous one is known."""
    from mlxsight.generation import GenerationTracer

    def count():
        calls = []

        def fn(h):
            calls.append(1)
            return h

        eos = stories.tokenizer.eos_token_id
        with stories.generate(max_new_tokens=6) as tracer:
            with tracer.invoke(PROMPT):
                for step in tracer.iter[:]:
                    stories.model.layers[1].output = mlxsight.apply(fn, stories.model.layers[1].output)
                    if step == 2:
                        stories.output[:, -1, eos] = 1e4
            with tracer.invoke():
                ids = tracer.result.save()
        assert ids.shape[1] == len(stories.tokenizer(PROMPT)["input_ids"]) + 3
        return len(calls)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        built_ahead = count()
        monkeypatch.setattr(GenerationTracer, "speculation", lambda self, runner: None)
        assert built_ahead == count(), built_ahead


def test_generate_step_drops_a_step_built_ahead_past_the_end():
    """generate_step's contract with a Speculation: the step built ahead of an ending step is rolled
    back and an error it raised is not raised; a step the run does make raises its error."""
    from mlxsight.generation import generate_step

    class Spy:
        def __init__(self):
            self.log = []

        def mark(self):
            self.log.append("mark")
            return len(self.log)

        def rollback(self, mark):
            self.log.append(("rollback", mark))

    def step_fn_failing_at(fail_call):
        calls = []

        def step_fn(ids, cache):
            calls.append(ids.shape)
            if len(calls) == fail_call:
                raise IndexError("built a step too far")
            logits = mx.zeros((ids.shape[0], ids.shape[1], 4))
            return logits.at[..., 2].add(1.0)  # greedy picks token 2 every step

        return step_fn

    greedy = lambda logits: logits.argmax(-1)  # noqa: E731
    ids = mx.array([[1, 1]])
    spy = Spy()
    # EOS (token 2) at the first step: the second forward, built ahead, raises and is dropped
    tokens = list(generate_step(step_fn_failing_at(2), None, ids, greedy, 5, [2], 0, speculation=spy))
    assert [t.tolist() for t in tokens] == [[2]] and spy.log == ["mark", ("rollback", 1)]
    # no EOS: the second step is made, so its error is raised (after the first token is yielded)
    with pytest.raises(IndexError, match="too far"):
        list(generate_step(step_fn_failing_at(2), None, ids, greedy, 5, [3], 0, speculation=Spy()))
    # without speculation the same runs give the same tokens
    assert [t.tolist() for t in generate_step(step_fn_failing_at(9), None, ids, greedy, 3, [3], 0)] == [[2]] * 3
    assert [t.tolist() for t in generate_step(step_fn_failing_at(9), None, ids, greedy, 3, [3], 0,
                                              speculation=Spy())] == [[2]] * 3
