"""Reads and writes inside one trace, checked against an eager hand-run forward."""

import mlx.core as mx
import numpy as np
import pytest

import mlxsight
from reference import llama_forward, token_ids


def test_saved_outputs_equal_eager_forward(stories, prompt):
    ids = token_ids(stories, prompt)
    emb, outs, logits = llama_forward(stories.mlx_model, ids)
    with stories.trace(prompt):
        e = stories.model.embed_tokens.output.save()
        hs = mlxsight.save([stories.model.layers[i].output for i in range(len(stories.model.layers))])
        out = stories.output.save()
    assert isinstance(out, mx.array) and isinstance(hs[0], mx.array)
    assert mx.array_equal(e, emb)
    for h, ref in zip(hs, outs):
        assert mx.array_equal(h, ref)
    assert mx.array_equal(out, logits)


def test_structure_is_known_while_recording(stories, prompt):
    n = len(token_ids(stories, prompt)[0])
    with stories.trace(prompt):
        h = stories.model.layers[0].output
        B, T, D = h.shape
        assert (B, T, D) == (1, n, 64)
        assert h.dtype == mx.float32 and h.ndim == 3 and len(h) == 1
        assert stories.model.layers[0].output is h  # two reads of one visit: one object
        args, kwargs = stories.model.layers[1].inputs
        assert len(args) == 2 and args[1] == "causal"  # mlx-lm: layer(h, mask, cache=cache)
        assert kwargs["cache"] is None
        assert stories.model.layers[1].input.shape == (1, n, 64)


def test_slice_assignment_matches_eager(stories, prompt):
    ids = token_ids(stories, prompt)

    def edit(i, h):
        if i == 1:
            h = mx.array(h)
            h[:, -1, :] = 0
        return h

    _, outs, logits = llama_forward(stories.mlx_model, ids, edit)
    with stories.trace(prompt):
        stories.model.layers[1].output[:, -1, :] = 0
        h1 = stories.model.layers[1].output.save()
        h3 = stories.model.layers[3].output.save()
        out = stories.output.save()
    assert mx.array_equal(h1, outs[1]) and float(mx.abs(h1[:, -1]).max()) == 0
    assert mx.array_equal(h3, outs[3])
    assert mx.array_equal(out, logits)


def test_replacement_and_inplace_ops_match_eager(stories, prompt):
    ids = token_ids(stories, prompt)

    def edit(i, h):
        return h * 2 if i == 2 else (h + 1.5 if i == 3 else h)

    _, outs, logits = llama_forward(stories.mlx_model, ids, edit)
    with stories.trace(prompt):
        stories.model.layers[2].output = stories.model.layers[2].output * 2
        stories.model.layers[3].output += 1.5
        out = stories.output.save()
        h2 = stories.model.layers[2].output.save()
    assert mx.array_equal(h2, outs[2])
    assert mx.allclose(out, logits, atol=1e-5)


def test_input_replacement_matches_eager(stories, prompt):
    ids = token_ids(stories, prompt)
    _, _, logits = llama_forward(stories.mlx_model, ids, edit_input=lambda i, h: h * 0.5 if i == 2 else h)
    with stories.trace(prompt):
        stories.model.layers[2].input = stories.model.layers[2].input * 0.5
        x = stories.model.layers[2].input.save()
        out = stories.output.save()
    assert mx.allclose(out, logits, atol=1e-5)
    _, outs, _ = llama_forward(stories.mlx_model, ids)
    assert mx.allclose(x, outs[1] * 0.5)


def test_module_called_on_proxy_is_the_logit_lens(stories, prompt):
    ids = token_ids(stories, prompt)
    _, outs, _ = llama_forward(stories.mlx_model, ids)
    inner = stories.mlx_model.model
    with stories.trace(prompt):
        h = stories.model.layers[2].output
        lens = stories.model.embed_tokens.as_linear(stories.model.norm(h)).save()
        probs = mlxsight.apply(mx.softmax, lens, axis=-1).save()
        top = lens.argmax(axis=-1).save()
    ref = inner.embed_tokens.as_linear(inner.norm(outs[2]))
    assert mx.array_equal(lens, ref)
    assert mx.allclose(probs, mx.softmax(ref, axis=-1))
    assert mx.array_equal(top, ref.argmax(axis=-1))


def test_ad_hoc_module_call_consumes_no_hook(stories, prompt):
    """Calling model.norm on a proxy must not be mistaken for the forward's own call."""
    ids = token_ids(stories, prompt)
    _, outs, _ = llama_forward(stories.mlx_model, ids)
    with stories.trace(prompt):
        lens = stories.model.norm(stories.model.layers[0].output).save()
        final = stories.model.norm.output.save()
    assert mx.array_equal(final, stories.mlx_model.model.norm(outs[-1]))
    assert mx.array_equal(lens, stories.mlx_model.model.norm(outs[0]))


def test_inputs_of_many_kinds_give_identical_results(stories, prompt):
    ids = stories.tokenizer(prompt)["input_ids"]
    variants = [prompt, [prompt], ids, [ids], mx.array(ids), mx.array([ids]), {"input_ids": [ids]}]
    results = []
    for x in variants:
        with stories.trace(x):
            out = stories.output.save()
        results.append(out)
    with stories.trace(input_ids=mx.array([ids]), attention_mask=mx.ones((1, len(ids)))):
        results.append(stories.output.save())
    for r in results[1:]:
        assert mx.array_equal(r, results[0])


def test_trace_false_runs_plain_forward(stories, prompt):
    out = stories.trace(prompt, trace=False)
    _, _, logits = llama_forward(stories.mlx_model, token_ids(stories, prompt))
    assert mx.array_equal(out, logits)


def test_values_in_functions_and_loops(stories, prompt):
    def collect(layers):
        with stories.trace(prompt):
            saved = mlxsight.save([stories.model.layers[i].output[0, -1] for i in layers])
        return saved

    got = collect([0, 4])
    _, outs, _ = llama_forward(stories.mlx_model, token_ids(stories, prompt))
    assert all(isinstance(g, mx.array) for g in got)
    np.testing.assert_array_equal(np.array(got[1]), np.array(outs[4][0, -1]))


def test_concrete_values_on_demand(stories, prompt):
    _, outs, _ = llama_forward(stories.mlx_model, token_ids(stories, prompt))
    with stories.trace(prompt):
        h = stories.model.layers[1].output
        total = mlxsight.save(h.sum().item())  # plain values leave the block only when saved (nnsight)
        big = mlxsight.save(bool(h.abs().max() > 1000))
        listed = mlxsight.save(h[0, -1, :3].tolist())
        if total > 0:
            h2 = (h * 2).save()
        else:
            h2 = (h * 3).save()
    assert total == pytest.approx(outs[1].sum().item(), rel=1e-5)
    assert big is False
    assert listed == pytest.approx(outs[1][0, -1, :3].tolist())
    factor = 2 if total > 0 else 3
    assert mx.allclose(h2, outs[1] * factor)


def test_tracer_graph_prints_as_code_with_lines(stories, prompt):
    with stories.trace(prompt) as tracer:
        h = stories.model.layers[1].output
        stories.model.layers[1].output[:, 0] = h[:, 0] * 2  # marker-line
        out = stories.output.save()
    text = str(tracer.graph)
    line = [l for l in text.splitlines() if "model.model.layers.1.output =" in l]
    assert line and "test_tracing.py:" in line[0]
    assert "model.model.layers.1.output" in text and "mul(" in text or "*" in text
    import inspect

    src_line = next(i for i, l in enumerate(inspect.getsource(test_tracer_graph_prints_as_code_with_lines).splitlines())
                    if "marker-line" in l)
    first = test_tracer_graph_prints_as_code_with_lines.__code__.co_firstlineno
    assert f"test_tracing.py:{first + src_line}" in line[0]
    assert out.shape[-1] == 512


def test_tracer_info_is_the_block_as_nnsight_gives_it(stories, prompt):
    import contextlib
    import sys

    with (
        stories.trace(prompt) as tracer,
        contextlib.nullcontext(),
    ):
        running = mlxsight.save(tracer.info.frame is sys._getframe())
        hidden = stories.model.layers[0].output.save()
    info = tracer.info
    assert running and info.frame is None  # the live frame while the block runs, dropped after
    assert info.filename == __file__
    assert info.line == test_tracer_info_is_the_block_as_nnsight_gives_it.__code__.co_firstlineno + 4  # `with (`
    # the block's body compiled: its first statement is the line after the header
    lines = {line for _, _, line in info.code.co_lines() if line}
    assert info.code.co_filename == __file__ and min(lines) == info.line + 4 and max(lines) == info.line + 5
    names = set(info.code.co_names)
    assert {"tracer", "sys", "stories"} <= names and hidden.shape[-1] == 64


def test_root_output_alone_is_read_and_edited_without_hooks(stories, prompt, monkeypatch):
    """A trace whose only hook point is the model's own output fires it on the forward's return
    value: no module is hooked, and reads, writes and later edits still match the eager forward."""
    from mlxsight import hooks

    ids = token_ids(stories, prompt)
    _, _, logits = llama_forward(stories.mlx_model, ids)
    with stories.trace(prompt):  # the forward's structure is learned (with hooks) once
        stories.output.save()
    entered = []
    original = hooks.observing.__enter__
    monkeypatch.setattr(hooks.observing, "__enter__", lambda self: entered.append(self) or original(self))
    with stories.trace(prompt):
        out = stories.output.save()
    with stories.trace(prompt):
        stories.output[:, -1] = 0
        edited = stories.output.save()
        top = stories.output[0, -2].argmax(-1).save()
    assert not entered
    assert mx.array_equal(out, logits)
    assert mx.array_equal(edited[:, :-1], logits[:, :-1]) and not mx.any(edited[:, -1]).item()
    assert top.item() == int(np.argmax(np.array(logits[0, -2])))
    with stories.trace(prompt):  # with a layer read too, that layer is hooked and the root is not
        h = stories.model.layers[0].output.save()
        out2 = stories.output.save()
    assert len(entered) == 1 and mx.array_equal(out2, logits)
    assert hooks.original_class(stories.mlx_model) is type(stories.mlx_model)

