"""Issue 10: misuse gets a clear error at the user's line (escaped proxies, MLX functions on
proxies, another model's modules, generate's bounds), and loading never runs checkpoint code."""

import builtins
import inspect
import json
import shutil

import mlx.core as mx
import pytest

import mlxsight
from mlxsight import assets
from mlxsight.errors import MLX_FUNCTION_HINT

PROMPT = "Once upon a time, there was a little girl"


def _line_of(fn, marker):
    src = inspect.getsource(fn).splitlines()
    return fn.__code__.co_firstlineno + next(i for i, line in enumerate(src) if marker in line)


def _plain_trace_ok(lm):
    ids = mx.array([lm.tokenizer(PROMPT)["input_ids"]])
    with lm.trace(PROMPT):
        out = lm.output.save()
    assert mx.array_equal(out, lm.mlx_model(ids))


class Box:
    pass


# -- escaped proxies (item 4) ---------------------------------------------------------------------

@pytest.fixture
def escaped(stories):
    box = Box()
    with stories.trace(PROMPT):
        box.h = stories.model.layers[0].output  # kept on an object: never saved, so it expires
        box.parts = [stories.model.layers[0].output[:, -1]]
    return box


def test_escaped_proxy_in_a_new_trace_is_refused_at_the_users_line(stories, escaped):
    cases = {
        "swap": lambda: setattr(stories.model.layers[1], "output", escaped.h),
        "slice-write": lambda: stories.model.layers[1].output.__setitem__((slice(None), -1), escaped.parts[0]),
        "right-operand": lambda: stories.model.layers[1].output * escaped.h,
        "left-operand": lambda: escaped.h * 100,
        "apply": lambda: mlxsight.apply(mx.add, stories.model.layers[1].output, escaped.h),
        "in-a-container": lambda: stories.model.layers[1].output.__setitem__(
            (0, slice(None)), mlxsight.apply(mx.concatenate, [escaped.parts[0]], axis=0)),
        "list-swap": lambda: setattr(stories.model.layers[1], "output", [escaped.h]),
        "module-call": lambda: stories.model.layers[2](escaped.h),
        "save": lambda: escaped.h.save(),
    }
    for name, use in cases.items():
        with pytest.raises(mlxsight.ExpiredProxyError, match="finished"):
            with stories.trace(PROMPT):
                use()
                stories.output.save()
    _plain_trace_ok(stories)


def test_escaped_proxy_error_names_the_users_line(stories, escaped):
    def body():
        with stories.trace(PROMPT):
            stories.model.layers[1].output = escaped.h  # expired-use
            stories.output.save()

    with pytest.raises(mlxsight.ExpiredProxyError) as info:
        body()
    assert f"line {_line_of(body, 'expired-use')}" in str(info.value)
    assert "model.model.layers.0.output" in str(info.value)


def test_escaped_proxy_outside_any_trace(stories, escaped):
    with pytest.raises(mlxsight.ExpiredProxyError):
        escaped.h + 1  # noqa: B018
    with pytest.raises(mlxsight.ExpiredProxyError):
        escaped.h[:, 0] = 0
    with pytest.raises(mlxsight.ExpiredProxyError):
        stories.model.layers[1](escaped.h)


def test_graph_refuses_nodes_of_another_graph():
    from mlxsight.graph import Graph

    a, b = Graph(), Graph()
    x = a.create("call_function", abs, (1,))
    b.create("call_function", abs, (2,))
    with pytest.raises(mlxsight.ExpiredProxyError, match="another trace"):
        b.create("call_function", abs, (x,))


# -- MLX functions on proxies, other models' modules (item 7) --------------------------------------

@pytest.mark.parametrize("call", [
    lambda h: mx.softmax(h, axis=-1),
    lambda h: mx.matmul(h, mx.ones((64, 2))),
    lambda h: mx.add(1, h),
    lambda h: mx.exp(h),
])
def test_mlx_function_on_a_proxy_points_at_apply(stories, call):
    with pytest.raises((TypeError, RuntimeError)) as info:
        with stories.trace(PROMPT):
            call(stories.model.layers[0].output).save()
    text = str(info.value) + " ".join(getattr(info.value, "__notes__", []))
    assert "mlxsight.apply" in text
    _plain_trace_ok(stories)


def test_apply_is_the_way(stories):
    with stories.trace(PROMPT):
        p = mlxsight.apply(mx.softmax, stories.output, axis=-1).save()
        logits = stories.output.save()
    assert mx.allclose(p, mx.softmax(logits, axis=-1))


def test_hint_is_added_only_for_proxy_errors():
    from mlxsight.errors import hint_mlx_function

    other = TypeError("something else")
    hint_mlx_function(other)
    assert not getattr(other, "__notes__", None)
    proxied = TypeError("f(): incompatible function arguments.\n\nInvoked with types: mlxsight.proxy.Proxy")
    hint_mlx_function(proxied)
    hint_mlx_function(proxied)
    assert proxied.__notes__ == [MLX_FUNCTION_HINT]


def test_another_models_module_on_this_models_proxy(stories, stories_path):
    other = mlxsight.LanguageModel(stories_path, view="mlx")

    def body():
        with stories.trace(PROMPT):
            other.model.layers[1](stories.model.layers[0].output).save()  # cross-model

    with pytest.raises(mlxsight.TraceError, match="called on a value of a trace of another model") as info:
        body()
    assert f"line {_line_of(body, 'cross-model')}" in str(info.value)
    _plain_trace_ok(stories)
    with stories.trace(PROMPT):  # what the message suggests works
        h = stories.model.layers[0].output.save()
    assert mx.array_equal(other.model.layers[1](h, "causal"), other.mlx_model.model.layers[1](h, "causal"))


# -- generate bounds (item 7) -------------------------------------------------------------------

@pytest.mark.parametrize("n", [0, -1])
def test_generate_needs_a_positive_max_new_tokens_like_transformers(stories, n):
    # transformers 5 (GenerationConfig.validate) raises exactly this; nothing is generated.
    message = f"`max_new_tokens` must be greater than 0, but is {n}."
    with pytest.raises(ValueError, match=message.replace("`", ".")):
        stories.generate(PROMPT, max_new_tokens=n)
    with pytest.raises(ValueError, match="must be greater than 0"):
        with stories.generate(PROMPT, max_new_tokens=n) as tracer:
            tracer.result.save()
    _plain_trace_ok(stories)
    assert stories.generate(PROMPT, max_new_tokens=1).shape[1] == len(stories.tokenizer(PROMPT)["input_ids"]) + 1


# -- loading never runs checkpoint code (item 7) -------------------------------------------------

SENTINEL_CODE = "import pathlib\npathlib.Path(__file__).with_name('RAN').write_text('ran')\n"


@pytest.fixture
def checkpoint(tmp_path, monkeypatch):
    """A copy of stories260K that can be given custom code; input() must never be reached."""
    root = tmp_path / "ckpt"
    shutil.copytree(assets.path("stories260k"), root)

    def no_prompt(*args, **kwargs):
        raise AssertionError(f"an interactive prompt was offered: {args}")

    monkeypatch.setattr(builtins, "input", no_prompt)
    return root


def _edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("flag", [None, False, True])
def test_model_file_is_never_imported(checkpoint, flag):
    (checkpoint / "custom_model.py").write_text(SENTINEL_CODE)
    _edit_json(checkpoint / "config.json", model_file="custom_model.py")
    kwargs = {} if flag is None else {"trust_remote_code": flag}
    with pytest.raises(mlxsight.CheckpointCodeError, match="never runs code from a checkpoint") as info:
        mlxsight.LanguageModel(str(checkpoint), **kwargs)
    assert "'custom_model.py'" in str(info.value)
    assert ("trust_remote_code=True does not change that" in str(info.value)) == bool(flag)
    assert "Pass trust_remote_code=True" not in str(info.value)
    assert not (checkpoint / "RAN").exists()


def test_an_architecture_only_the_checkpoints_code_defines_is_refused(checkpoint):
    (checkpoint / "modeling_custom.py").write_text(SENTINEL_CODE)
    _edit_json(checkpoint / "config.json", model_type="custom_llama",
               auto_map={"AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"})
    with pytest.raises(mlxsight.CheckpointCodeError, match="modeling_custom.*custom_llama.*never runs code"):
        mlxsight.LanguageModel(str(checkpoint), trust_remote_code=True)
    assert not (checkpoint / "RAN").exists()


@pytest.mark.parametrize("flag", [None, True])
def test_tokenizer_auto_map_without_a_builtin_class_is_refused_without_a_prompt(checkpoint, flag):
    (checkpoint / "custom_tok.py").write_text(SENTINEL_CODE + "class CustomTokenizer: pass\n")
    _edit_json(checkpoint / "tokenizer_config.json", tokenizer_class="CustomTokenizer",
               auto_map={"AutoTokenizer": ["custom_tok.CustomTokenizer", None]})
    kwargs = {} if flag is None else {"trust_remote_code": flag}
    with pytest.raises(mlxsight.CheckpointCodeError, match="custom_tok.CustomTokenizer.*never runs code"):
        mlxsight.LanguageModel(str(checkpoint), **kwargs)
    assert not (checkpoint / "RAN").exists()


def test_tokenizer_auto_map_with_a_builtin_class_loads_the_builtin_and_says_so(checkpoint):
    (checkpoint / "custom_tok.py").write_text(SENTINEL_CODE + "class LlamaTokenizer: pass\n")
    _edit_json(checkpoint / "tokenizer_config.json", auto_map={"AutoTokenizer": ["custom_tok.LlamaTokenizer", None]})
    with pytest.warns(UserWarning, match="never runs checkpoint code, so transformers' built-in"):
        lm = mlxsight.LanguageModel(str(checkpoint), view="mlx", trust_remote_code=True)
    assert not (checkpoint / "RAN").exists()
    _plain_trace_ok(lm)


def test_trust_remote_code_on_a_plain_checkpoint_is_harmless(stories_path):
    lm = mlxsight.LanguageModel(stories_path, view="mlx", trust_remote_code=True)
    _plain_trace_ok(lm)
