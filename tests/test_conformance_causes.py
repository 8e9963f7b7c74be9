"""One regression test per cause found by the conformance suites (issue 9): real nnsight code that
failed on mlxsight for that reason. References are independent: nnsight's installed package (its
import surface, its behaviour through `compat crosscheck`), transformers' forward, the tokenizer's
own chat template.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

import mlxsight
from mlxsight import assets
from mlxsight.batching import rows_of
from mlxsight.envoy import Envoy
from mlxsight.errors import NNsightDeprecationWarning
from tiny_models import build_tokenizer, cached_checkpoint

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = Path(__file__).resolve().parent / "compat_scripts"


def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=ROOT)


@pytest.fixture(scope="module")
def stories():
    return mlxsight.LanguageModel(str(assets.path("stories260k")))


# -- (1) the import surface -------------------------------------------------------------------

def test_surface_file_is_the_installed_nnsight_0_8_1s():
    proc = run("-m", "compat.surface", "--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]


def test_every_nnsight_module_imports_and_unprovided_names_name_the_feature(tmp_path):
    surface = json.loads((ROOT / "compat" / "shim" / "nnsight" / "surface.json").read_text())["modules"]
    script = tmp_path / "surface.py"
    script.write_text(f"""
import importlib, json
surface = json.loads({json.dumps(json.dumps(surface))})
provided, refused = 0, 0
for name, public in surface.items():
    module = importlib.import_module(name)
    for attr in public or ():
        try:
            getattr(module, attr)
            provided += 1
        except AttributeError as e:
            assert "not provided by mlxsight" in str(e) and f"{{name}}.{{attr}}" in str(e), (name, attr, e)
            refused += 1
from nnsight.modeling.transformers import TransformersModel
from nnsight.intervention.eproperty import eproperty
from nnsight.intervention.envoy import Envoy
from nnsight.ndif import register
try:
    from nnsight.modeling.vllm import VLLM
    raise SystemExit("VLLM imported")
except ImportError as e:
    assert "nnsight.modeling.vllm.VLLM" in str(e) and "--backend nnsight" in str(e), e
print(provided, refused)
""")
    proc = run("-m", "compat", "run", "--backend", "mlx", str(script))
    assert proc.returncode == 0, proc.stderr[-3000:]
    provided, refused = map(int, proc.stdout.split()[-2:])
    assert provided >= 20 and refused > 0


# -- (2) saved values are torch wherever the script holds them; .save() on any object -------------

def test_held_values_crosscheck_against_nnsight(tmp_path):
    """Lists built before the trace, list().save() filled per step, cache entries, a custom
    envoy's eproperty and generate() outside a block: the same values as nnsight, as torch."""
    ckpt = cached_checkpoint("llama")
    out = tmp_path / "table.json"
    proc = run("-m", "compat", "crosscheck", str(SCRIPTS / "held_values.py"), str(ckpt), "--json", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert any("heads" in json.dumps(r) for r in (rows if isinstance(rows, list) else [rows]))


# -- (3) the model object: nnsight's model.inputs ----------------------------------------------

def test_root_inputs_are_keywords_with_a_mask(stories):
    with stories.trace("Once upon a time"):
        inputs = stories.inputs.save()
        logits = stories.output.logits.save()
    args, kwargs = inputs
    assert args == () and {"input_ids", "attention_mask"} <= set(kwargs)
    assert kwargs["attention_mask"].tolist() == [[1] * kwargs["input_ids"].shape[1]]
    tok = stories.tokenizer
    assert kwargs["input_ids"].tolist() == [tok("Once upon a time")["input_ids"]]
    assert logits.shape[:2] == kwargs["input_ids"].shape


# -- (4) loading, chat templates, per-invoke tokenizer options -----------------------------------

def test_a_gpt2_saved_by_transformers_loads_and_matches_transformers(tmp_path):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    build_tokenizer(tmp_path, vocab_size=256)
    tok = PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    torch.manual_seed(0)
    reference = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=64)).eval()
    reference.save_pretrained(tmp_path)  # transformers' own layout: `transformer.` keys, nested config
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), "np") as f:
        assert any(k.startswith("transformer.") for k in f.keys())
    model = mlxsight.LanguageModel(str(tmp_path))
    ids = [[3, 17, 42, 5, 9]]
    with model.trace(ids):
        logits = model.output.logits.save()
    with torch.no_grad():
        expected = reference(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(np.array(logits), expected, atol=1e-4, rtol=1e-4)


def test_chat_messages_go_through_the_chat_template(stories):
    tok = stories.tokenizer
    template = tok.chat_template
    tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
    try:
        chat = [{"role": "user", "content": "Tell me a story"}]
        other = [*chat, {"role": "assistant", "content": "Once"}, {"role": "user", "content": "more"}]
        expected = [tok.apply_chat_template(c, add_generation_prompt=True, tokenize=True, return_dict=False)
                    for c in (chat, other)]
        assert rows_of((chat,), {}, tok) == expected[:1]
        assert rows_of(([chat, other],), {}, tok) == expected
        with stories.trace([chat, other]):
            logits = stories.output.logits.save()
        assert logits.shape[:2] == (2, max(map(len, expected)))
    finally:
        tok.chat_template = template


def test_tokenizer_options_apply_per_invoke(stories):
    text = "Once upon a time there was a little girl"
    assert len(rows_of((text,), {"max_length": 3, "truncation": True}, stories.tokenizer)[0]) == 3
    with stories.trace() as tracer:
        with tracer.invoke(text, max_length=3, truncation=True):
            short = stories.lm_head.output.save()
        with tracer.invoke(text):
            full = stories.lm_head.output.save()
    assert short.shape[1] == full.shape[1]  # padded to the batch, as nnsight does
    assert short.shape[1] > 3


# -- (5) custom envoys, eproperty-style views, isinstance, failing inputs -------------------------

def test_custom_envoy_classes_by_path_suffix_and_class():
    """``envoys=`` as nnsight takes it: a path suffix, or a transformers class (``LlamaAttention``)
    that selects the HF-view module standing for it."""
    from transformers.models.llama.modeling_llama import LlamaAttention

    class MLP(Envoy):
        pass

    class Attention(Envoy):
        pass

    model = mlxsight.LanguageModel(str(assets.path("stories260k")), envoys={"mlp": MLP, LlamaAttention: Attention})
    assert all(type(layer.mlp) is MLP for layer in model.model.layers)
    assert all(type(layer.self_attn) is Attention for layer in model.model.layers)
    assert type(model.model.layers[0]) is Envoy and type(model.model.layers[0].self_attn.q_proj) is Envoy


def test_a_failing_trace_input_leaves_no_trace_open(stories):
    with pytest.raises(TypeError):
        with stories.trace(object()):
            pass
    with stories.trace("Once"):
        out = stories.lm_head.output.save()
    assert isinstance(out, mx.array)


# -- (7) warning classes ----------------------------------------------------------------------

def test_deprecated_aliases_warn_nnsights_class(stories):
    assert issubclass(NNsightDeprecationWarning, FutureWarning)
    with pytest.warns(NNsightDeprecationWarning):
        with stories.generate("Once", max_new_tokens=2):
            ids = stories.generator.output.save()
    assert ids.shape[1] >= 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with stories.generate("Once", max_new_tokens=2) as tracer:
            ids = tracer.result.save()


# -- (5) gradients of tuple outputs and module inputs -----------------------------------------

def test_tuple_output_and_input_gradients_crosscheck_against_nnsight():
    proc = run("-m", "compat", "crosscheck", str(SCRIPTS / "tuple_grads.py"), str(cached_checkpoint("llama")))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 values: 2 match" in proc.stdout


def test_gradient_edits_and_two_backward_passes_crosscheck_against_nnsight():
    """``x.grad = x.grad * 3`` in a batch's second invoke, read back and at an earlier layer, then a
    second backward of another loss: every value equals nnsight's (torch hooks, same checkpoint)."""
    proc = run("-m", "compat", "crosscheck", str(SCRIPTS / "grad_edits.py"), str(cached_checkpoint("llama")))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "5 values: 5 match" in proc.stdout


def test_grad_read_before_backward_crosschecks_against_nnsight():
    """The attribution-patching tutorial's ``attn_out.grad.save()`` before ``value.backward()``:
    None on both backends (torch's ``.grad`` of a non-leaf tensor), the other saves equal."""
    proc = run("-m", "compat", "crosscheck", str(SCRIPTS / "grad_before_backward.py"), str(cached_checkpoint("llama")))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "3 values: 3 match" in proc.stdout  # the script asserts every layer's grad is None


def test_session_body_holds_torch_values_and_saves(tmp_path):
    """Inside a session, values saved by one trace are torch tensors in the body (nnsight's session
    holds real tensors), `.save()` works in the body, and they flow into the next trace."""
    script = tmp_path / "session.py"
    script.write_text('''import sys
import torch
from nnsight import LanguageModel
from transformers import AutoTokenizer
model = LanguageModel(sys.argv[1], tokenizer=AutoTokenizer.from_pretrained(sys.argv[1]))
with model.session():
    with model.trace("Once upon a time"):
        h = model.model.layers[0].output.save()
    stacked = torch.stack([h, h]).save()
    with model.trace("Once upon a time"):
        model.model.layers[0].output = h * 2
        logits = model.lm_head.output.save()
with model.session():  # nnsight's docs/usage/session.md: unsaved values appended to a list
    norms = []
    for layer in range(2):
        with model.trace("Once upon a time"):
            norms.append(model.model.layers[layer].output.norm())
    norms_stacked = torch.stack(norms).save()
''')
    proc = run("-m", "compat", "crosscheck", str(script), str(cached_checkpoint("llama")))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "4 values: 4 match" in proc.stdout


def test_envoys_keys_in_alias_spellings_and_parent_links():
    """An ``envoys=`` key written in a ``rename=`` alias reaches the module the alias names; the
    native spelling stands over the alias one; ``.parent`` walks up as in nnsight."""
    class FFN(Envoy):
        pass

    class Other(Envoy):
        pass

    model = mlxsight.LanguageModel(str(assets.path("stories260k")), rename={"mlp": "ffn", "model.layers": "blocks"},
                                   envoys={"ffn": FFN, "blocks.*.self_attn": Other})
    layer = model.model.layers[1]
    assert type(layer.ffn) is FFN and layer.ffn is layer.mlp
    assert type(layer.self_attn) is Other and type(layer.self_attn.q_proj) is Envoy
    assert layer.mlp.parent is layer and layer.parent is model.model.layers and model.parent is None
    native = mlxsight.LanguageModel(str(assets.path("stories260k")), rename={"mlp": "ffn"},
                                    envoys={"mlp": FFN, "ffn": Other})
    assert type(native.model.layers[0].ffn) is FFN


def printed_on_both(script: str, checkpoint: str) -> dict[str, list[str]]:
    """What a compat script prints on each backend (asserted equal): ``{"mlx": lines, "nnsight": lines}``."""
    printed = {}
    for backend in ("mlx", "nnsight"):
        proc = run("-m", "compat", "run", "--backend", backend, str(SCRIPTS / script), checkpoint)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        printed[backend] = proc.stdout.splitlines()
    assert printed["mlx"] == printed["nnsight"]
    return printed


def test_iter_block_form_runs_its_body_per_step_as_nnsight():
    ckpt = str(cached_checkpoint("llama"))
    proc = run("-m", "compat", "crosscheck", str(SCRIPTS / "iter_block_form.py"), ckpt)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "10 values: 10 match, 0 mismatch" in proc.stdout
    printed = printed_on_both("iter_block_form.py", ckpt)  # an open block form ends its invoke: the line after never runs
    assert printed["mlx"][:2] == ["all 3 False", "iter 3 False"]


def test_a_generation_that_saves_nothing_still_streams_as_on_nnsight():
    """nnsight always runs the model: a generate block with an edit and no save (or an empty one)
    still hands its streamer the prompt, every step's tokens and the end. Same lines on both."""
    printed = printed_on_both("runs_unsaved.py", str(assets.path("stories260k")))
    assert len(printed["mlx"]) == 2 and all(line.endswith("'end']") and line.count("[") == 6 for line in printed["mlx"])


def test_a_block_leaves_only_its_saved_names_as_on_nnsight():
    """nnsight's outermost block pushes only saved values (a session's inner traces push all of
    theirs to its body): the same names exist after each block on both backends."""
    printed = printed_on_both("pushed_names.py", str(assets.path("stories260k")))
    assert printed["mlx"][0] == ("trace: {'n_heads': False, 'i': False, 'layer': False, 'last': True, 'shape': True} "
                                 "before")
    assert printed["mlx"][1] == "session: {'h': True, 'k': True} {'out': True, 'k': False, 'note': False, 'h': False}"


# -- (6) order of access -----------------------------------------------------------------------

def test_out_of_order_reads_raise_as_in_nnsight_naming_both_lines(stories):
    from mlxsight.errors import OutOfOrderError

    with pytest.raises(OutOfOrderError) as info:
        with stories.trace("Once upon"):
            stories.model.layers[3].output.save()  # the later layer first
            stories.model.layers[1].output.save()
    text = str(info.value)
    assert "model.model.layers.1.output" in text and "model.model.layers.3.output" in text
    assert text.count("test_conformance_causes.py") >= 2  # both lines
    with pytest.raises(OutOfOrderError):
        with stories.trace("Once upon"):
            stories.model.layers[0].output.save()
            stories.model.layers[0].input.save()  # a module's input comes before its output
    mlxsight.set_relaxed_order(True)
    try:
        with stories.trace("Once upon"):
            late = stories.model.layers[3].output.save()
            early = stories.model.layers[1].output.save()
    finally:
        mlxsight.set_relaxed_order(False)
    with stories.trace("Once upon"):
        early_ordered = stories.model.layers[1].output.save()
        late_ordered = stories.model.layers[3].output.save()
    assert mx.array_equal(late, late_ordered) and mx.array_equal(early, early_ordered)


@pytest.mark.parametrize("backend", ["mlx", "nnsight"])
def test_out_of_order_is_the_same_error_on_both_backends(backend):
    proc = run("-m", "compat", "run", "--backend", backend, str(SCRIPTS / "out_of_order.py"),
               str(cached_checkpoint("llama")))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "caught OutOfOrderError: True" in proc.stdout


# -- (7) rename=, cache, generation and envoy features nnsight's own tests use -----------------

@pytest.mark.parametrize("rename", [{"*.layers": "*.blocks"}, {"self_attn.q_proj": "mlp.query"}])
def test_a_dotted_alias_whose_prefix_is_no_ancestor_is_refused_at_load(rename):
    with pytest.raises(ValueError, match="names no ancestor"):
        mlxsight.LanguageModel(str(assets.path("stories260k")), rename=rename)


def test_a_dotted_alias_binds_on_the_ancestor_its_prefix_names():
    model = mlxsight.LanguageModel(str(assets.path("stories260k")),
                                   rename={"self_attn.q_proj": "self_attn.query", "model.layers": "blocks"})
    layer = model.model.layers[0]
    assert layer.self_attn.query is layer.self_attn.q_proj
    assert model.blocks is model.model.layers  # an undotted alias binds where its key resolves from


def test_a_cache_navigates_like_the_model_through_aliases_and_list_indices():
    """Every spelling the model accepts (``rename=`` aliases, an alias of a list entry, the short
    form without the root's name) reaches the cache entry stored under the native path."""
    model = mlxsight.LanguageModel(str(assets.path("stories260k")),
                                   rename={"model": "backbone", "layers.0": "first", "1": "second", "mlp": "ffn"})
    assert model.model.layers.second is model.model.layers[1] is model.model.layers["second"]
    with model.trace("Once upon") as tracer:
        cache = tracer.cache()
        mlp = model.model.layers[0].mlp.output.save()
        l0 = model.model.layers[0].output.save()
        l1 = model.model.layers[1].output.save()
    for spelled in (cache["model.model.layers.0"], cache.model.backbone.first, cache["model.backbone.first"],
                    cache.model.model.layers[0], cache.backbone.layers[0]):
        assert mx.array_equal(spelled.output, l0)
    assert mx.array_equal(cache.model.model.layers["second"].output, l1)
    assert mx.array_equal(cache.backbone.layers[0].ffn.output, mlp)
    with pytest.raises(AttributeError):
        cache.model.model.layers.nothing_here


def test_a_cache_opened_in_an_invoke_holds_that_invokes_rows(stories):
    layer = stories.model.layers[0].mlp
    with stories.trace() as tracer:
        with tracer.invoke("Once upon"):
            ca = tracer.cache(modules=[layer], include_inputs=True)
            a = layer.output.save()
        with tracer.invoke("Once upon a time there was a girl"):
            cb = tracer.cache(modules=[layer])
            b = layer.output.save()
        with tracer.invoke():
            whole = tracer.cache(modules=[layer])
    assert ca["model.model.layers.0.mlp"].output.shape[0] == 1 == cb["model.model.layers.0.mlp"].output.shape[0]
    assert mx.array_equal(ca["model.model.layers.0.mlp"].output, a)
    assert mx.array_equal(cb["model.model.layers.0.mlp"].output, b)
    assert ca["model.model.layers.0.mlp"].input.shape[0] == 1
    assert mx.array_equal(whole["model.model.layers.0.mlp"].output, mx.concatenate([a, b]))


def test_num_return_sequences_repeats_each_prompt_row_as_transformers(stories):
    prompts = ["Once upon", "The cat sat on the"]
    with stories.generate(prompts, max_new_tokens=3) as tracer:
        greedy = tracer.result.save()
    # top_k=1 samples deterministically: every returned sequence is the greedy one
    with stories.generate(prompts, max_new_tokens=3, num_return_sequences=2, do_sample=True, top_k=1) as tracer:
        out = tracer.result.save()
        hidden = stories.model.layers[0].output.save()
    assert out.shape[0] == 4 and hidden.shape[0] == 4
    assert mx.array_equal(out, mx.repeat(greedy, 2, axis=0))
    with pytest.raises(ValueError, match="num_return_sequences"):
        stories.generate("Once upon", max_new_tokens=2, num_return_sequences=2)  # greedy: transformers refuses


def test_a_class_key_rename_still_binds_beside_list_aliases():
    """A class key names a child by type on modules; list entries are aliased by index only."""
    probe = mlxsight.LanguageModel(str(assets.path("stories260k")))
    attn_class = type(probe.model.layers[0].self_attn._module)
    model = mlxsight.LanguageModel(str(assets.path("stories260k")), rename={attn_class: "attn", "0": "first"})
    assert model.model.layers.first is model.model.layers[0]
    assert model.model.layers[2].attn is model.model.layers[2].self_attn


def test_eproperty_views_are_memoized_and_transform_edits_go_back_as_on_nnsight():
    """A custom envoy's eproperty: one view per step (``heads is heads``) and in-place edits of the
    view written back through its ``transform``; the edited logits crosschecked with nnsight."""
    proc = run("-m", "compat", "crosscheck", str(SCRIPTS / "eproperty_transform.py"), str(cached_checkpoint("llama")))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "6 values: 6 match, 0 mismatch" in proc.stdout


def test_an_envoys_key_may_spell_several_aliases_at_once():
    """Spellings compose through ancestors: ``blocks.0.attn`` under ``{"model.layers": "blocks",
    "self_attn": "attn"}`` names layer 0's attention, and only it."""
    class Attn(Envoy):
        pass

    model = mlxsight.LanguageModel(str(assets.path("stories260k")),
                                   rename={"model.layers": "blocks", "self_attn": "attn"},
                                   envoys={"blocks.0.attn": Attn})
    assert type(model.blocks[0].attn) is Attn and model.blocks[0].attn is model.model.layers[0].self_attn
    assert type(model.model.layers[1].self_attn) is Envoy


def test_the_generators_streamer_gives_the_prompt_then_a_token_per_step(stories):
    """``model.generator.streamer.output`` at step k is what transformers' streamer gets: the prompt
    ids, then each step's new token per row, the very tokens of ``tracer.result``."""
    steps = []
    with stories.generate(["Once upon a", "The cat"], max_new_tokens=3) as tracer:
        for _ in tracer.iter[:4]:
            steps.append(stories.generator.streamer.output.save())
        result = tracer.result.save()
    prompt = result.shape[1] - 3
    assert mx.array_equal(steps[0], result[:, :prompt])
    for k in range(1, 4):
        assert mx.array_equal(steps[k], result[:, prompt + k - 1])
    with pytest.raises(ValueError, match="generate"):
        with stories.trace("Once upon"):
            stories.generator.streamer.output.save()


def test_a_module_called_on_torch_tensors_outside_a_trace_gives_torch_under_torch_semantics():
    """``model.my_mlp(torch_tensor)`` outside a trace (nnsight's test_forward_call_via_alias): the
    arguments reach the MLX module as arrays and the output comes back through the value transform."""
    torch = pytest.importorskip("torch")
    from mlxsight.tree import map_tree

    model = mlxsight.LanguageModel(str(assets.path("stories260k")), rename={"model.layers.0.mlp": "my_mlp"})
    hidden = np.random.default_rng(0).standard_normal((1, 4, 64)).astype(np.float32)
    expected = np.array(model.model.layers[0].mlp._module(mx.array(hidden)))
    mlxsight.set_torch_semantics(True)
    mlxsight.set_value_transform(lambda v: map_tree(v, lambda a: torch.from_numpy(np.array(a))
                                                    if isinstance(a, mx.array) else a))
    try:
        via_alias = model.my_mlp(torch.from_numpy(hidden))
        via_name = model.model.layers[0].mlp(torch.from_numpy(hidden))
    finally:
        mlxsight.set_torch_semantics(False)
        mlxsight.set_value_transform(None)
    assert isinstance(via_alias, torch.Tensor) and torch.equal(via_alias, via_name)
    np.testing.assert_array_equal(via_alias.numpy(), expected)


def test_path_ends_with_is_nnsights_rule_and_the_shim_provides_it(tmp_path):
    from mlxsight.envoy import path_ends_with

    assert path_ends_with("model.layers.0", "layers.*") and path_ends_with("model.layers.0", ".layers.*")
    assert not path_ends_with("model.layers", "layers.*") and not path_ends_with("model.layers.0.attn", "layers.*")
    script = tmp_path / "aliasing.py"
    script.write_text("from nnsight.intervention.aliasing import path_ends_with\n"
                      "print(path_ends_with('model.transformer.h.3', 'h.*'), path_ends_with('model.h', 'h.*'))\n")
    proc = run("-m", "compat", "run", "--backend", "mlx", str(script))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-2:] == ["True", "False"]


# -- (8) nnsight's published documentation (conformance.docs) -----------------------------------

def test_a_concrete_value_in_one_invoke_survives_edits_in_later_invokes(stories):
    """docs/patterns/activation-patching.md: `.item()` in one corrupt invoke, then another invoke
    patches an earlier layer on its own rows. Each result equals its own two-trace reference."""
    clean, corrupt = "Lily went to the park", "Lily ran to the park"
    tok = stories.tokenizer.encode(" and")[-1]
    assert len(stories.tokenizer.encode(clean)) == len(stories.tokenizer.encode(corrupt))
    hs = {}
    with stories.trace() as tracer:
        results = mlxsight.save({})
        with tracer.invoke(clean):
            for i in range(2):  # each layer's entry is set when the forward is there (bodies run interleaved)
                hs[i] = stories.model.layers[i].output
        for layer in range(2):
            with tracer.invoke(corrupt):
                out = stories.model.layers[layer].output  # asked for first: the clean body has bound hs there
                out[:, 1:3] = hs[layer][:, 1:3]
                results[layer] = stories.lm_head.output[0, -1].softmax(-1)[tok].item()
    for layer in range(2):
        with stories.trace(clean):
            h = stories.model.layers[layer].output.save()
        with stories.trace(corrupt):
            stories.model.layers[layer].output[:, 1:3] = h[:, 1:3]
            p = stories.lm_head.output[0, -1].softmax(-1)[tok].save()
        assert abs(results[layer] - p.item()) < 1e-6
    assert results[0] != results[1]
    # a whole-batch invoke's edit of an earlier layer: the bodies run interleaved in forward order
    # (as nnsight's workers), so it is recorded before the value is taken, and the value includes it
    values = []
    with stories.trace() as tracer:
        with tracer.invoke(corrupt):
            values.append(stories.lm_head.output[0, -1].sum().item())
        with tracer.invoke():
            stories.model.layers[0].output[:] = 0
    with stories.trace(corrupt):
        stories.model.layers[0].output[:] = 0
        ref = stories.lm_head.output[0, -1].sum().save()
    assert len(values) == 1 and abs(values[0] - ref.item()) < 1e-4


def test_backward_block_on_plain_torch_tensors_prints_what_nnsight_prints():
    """docs/usage/backward-and-grad.md: `with loss.backward(): g = x.grad.save()` outside a trace."""
    outs = {}
    for backend in ("mlx", "nnsight"):
        proc = run("-m", "compat", "run", "--backend", backend, str(SCRIPTS / "torch_backward_block.py"))
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        outs[backend] = proc.stdout.splitlines()
    assert outs["mlx"] == outs["nnsight"]
    assert outs["mlx"][0] == "block [4.0, 6.0] [4.0, 6.0]" and len(outs["mlx"]) == 3


def test_a_torch_module_with_its_own_forward_is_refused_at_construction_naming_the_way_out():
    """docs/usage/skip.md wraps a torch `nn.Module` with its own forward in `NNsight`: mlxsight
    mirrors standard torch layers in MLX (tests/test_torch_modules.py) and says at construction
    that a custom forward cannot be run, instead of failing later at `.fc1.skip`."""
    import torch

    class MLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = torch.nn.Linear(2, 2)

        def forward(self, x):
            return self.fc1(x).relu()

    with pytest.raises(TypeError, match="torch module MLP cannot be mirrored.*--backend nnsight"):
        mlxsight.NNsight(MLP())


def test_backward_block_on_plain_torch_tensors_saves_what_nnsight_saves():
    proc = run("-m", "compat", "crosscheck", str(SCRIPTS / "torch_backward_block.py"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 values: 2 match" in proc.stdout


def test_seeded_sampling_draws_the_same_tokens_as_nnsight():
    """docs/models/transformers-model.md (``pipe`` samples by default): under compat, ``do_sample``
    consumes torch's global random stream as transformers' ``generate`` does, so a seeded script
    samples the same ids on both backends (default top-k, temperature/top-k/top-p, all tokens,
    returned sequences of a batch, a traced generate) and leaves the stream in the same place."""
    ckpt = str(cached_checkpoint("llama"))
    outs = {}
    for backend in ("mlx", "nnsight"):
        proc = run("-m", "compat", "run", "--backend", backend, str(SCRIPTS / "sampled_generation.py"), ckpt)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        outs[backend] = proc.stdout.splitlines()
    assert len(outs["mlx"]) == 2 and outs["mlx"] == outs["nnsight"]


def test_an_installed_sampler_gets_the_calls_settings_and_each_steps_logits(stories):
    """The core's sampling hook (``context.set_sampler``, what compat fills): called once per
    generate with the resolved settings, then with every step's last-position logits; unset, MLX
    samples again."""
    from mlxsight import context

    prompt, calls, seen = "The cat sat on the", [], []

    def factory(temperature, top_k, top_p):
        calls.append((temperature, top_k, top_p))

        def sample(logits):
            seen.append(logits)
            return mx.argmax(logits, axis=-1)  # greedy, so the ids can be checked against greedy
        return sample

    greedy = stories.generate(prompt, max_new_tokens=4)
    context.set_sampler(factory)
    try:
        out = stories.generate(prompt, max_new_tokens=4, do_sample=True, temperature=0.5, top_p=0.9)
        assert stories.generate(prompt, max_new_tokens=4, do_sample=False).tolist() == greedy.tolist()
    finally:
        context.set_sampler(None)
    assert calls == [(0.5, 50, 0.9)] and len(seen) == 4  # transformers' default top-k, one call per step
    assert out.tolist() == greedy.tolist()
    with stories.trace(prompt):
        logits = stories.lm_head.output.save()
    assert np.allclose(np.array(seen[0]), np.array(logits[:, -1]), atol=1e-5)
    assert context.sampler() is None


def test_a_generations_cache_entry_reads_as_nnsights_cache_view():
    """docs/usage/cache.md: ``len(cache[path])`` is the step count and ``cache[path].output[0]`` step
    0's tensor, by path and by navigation, inputs too; a module visited once reads as one value.
    Printed shapes, step counts and equalities are nnsight's."""
    ckpt = str(cached_checkpoint("llama"))
    outs = {}
    for backend in ("mlx", "nnsight"):
        proc = run("-m", "compat", "run", "--backend", backend, str(SCRIPTS / "generation_cache.py"), ckpt)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        outs[backend] = proc.stdout.splitlines()
    assert outs["mlx"] == outs["nnsight"]
    assert outs["mlx"][0].startswith("3 3 list") and outs["mlx"][3] == "[0.0, 0.0, 0.0]"


def test_a_module_run_ad_hoc_from_a_subclass_method_saves_what_nnsight_saves():
    """docs/developing/extending.md #2 (``self[1](hidden)`` in an ``NNsight`` subclass) on its own:
    the values equal nnsight's. On the page they differ only because #1, refused here at
    construction, would have drawn two input batches from torch's random stream first."""
    proc = run("-m", "compat", "crosscheck", str(SCRIPTS / "adhoc_module_call.py"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "3 values: 3 match" in proc.stdout
def test_shorter_invokes_values_are_padded_to_the_batch_as_nnsights():
    """docs/usage/barrier.md #0: a shorter invoke's embeddings written into a longer invoke, and an
    operation between two invokes' values: nnsight pads both to the batch, so they agree; every
    value, pad positions included, equals nnsight's on the same checkpoint."""
    proc = run("-m", "compat", "crosscheck", str(SCRIPTS / "cross_invoke_padding.py"), str(cached_checkpoint("llama")))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "6 values: 6 match" in proc.stdout


def test_item_in_every_invoke_equals_nnsights_one_forward():
    """docs/patterns/ablation.md #3: `.item()` in every invoke of a sweep, prompts of different
    lengths, one invoke patched from another: each number equals nnsight's."""
    proc = run("-m", "compat", "crosscheck", str(SCRIPTS / "item_per_invoke.py"), str(cached_checkpoint("llama")))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "14 values: 14 match" in proc.stdout


# -- the documentation runner: notebook cells as Python -------------------------------------

def test_notebook_magics_become_pass_so_colab_blocks_stay_python():
    from conformance.docs import python_of_cell

    cell = "if is_colab:\n    !pip install -U nnsight\n    %cd dir\nx = 1"
    assert python_of_cell(cell) == "if is_colab:\n    pass\n    pass\nx = 1\n"
    compile(python_of_cell(cell), "cell", "exec")
    assert python_of_cell("%%capture\nimport os") == "import os\n"
    assert python_of_cell("%%bash\nls -l") == ""


def test_invoke_bodies_interleave_as_nnsights_workers():
    """tests/compat_scripts/invoke_interleaving.py on both backends: which sibling names a body sees
    (a one-statement write of a sibling's value is nnsight's NameError, asking for the layer first
    or a barrier hands it over), the order the bodies' Python runs in, and every saved value."""
    ckpt = cached_checkpoint("llama")
    outs = {}
    for backend in ("mlx", "nnsight"):
        proc = run("-m", "compat", "run", "--backend", backend, str(SCRIPTS / "invoke_interleaving.py"), str(ckpt))
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        outs[backend] = proc.stdout.splitlines()
    assert outs["mlx"] == outs["nnsight"]
    assert outs["mlx"][0].startswith("right-hand side first: NameError")
    assert outs["mlx"][1].startswith("layer asked for first: ran")
    assert outs["mlx"][3].startswith("earlier layer: NameError")
    assert outs["mlx"][5].startswith("loop of reads: NameError")
    proc = run("-m", "compat", "crosscheck", str(SCRIPTS / "invoke_interleaving.py"), str(ckpt))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_a_loop_past_the_end_of_sequence_is_cut_short_as_on_nnsight():
    """A generation ending at its end-of-sequence token makes fewer steps than a loop asks for. nnsight
    runs the body alongside the model, so the body stops at its first request of a step never made:
    what it did before stands (the step number appended for it), nothing after happened (the values
    appended then, the names saved after the loop). Same lines and values on both backends."""
    ckpt = str(assets.path("stories260k"))
    printed = printed_on_both("eos_cut.py", ckpt)
    lines = dict(line.split(":", 1) for line in printed["mlx"] if line.split(":", 1)[0] in ("all", "bounded"))
    assert lines["all"].startswith(" [0, 1, 2, 3] ") and lines["all"].endswith(" [0, 1, 2] False")
    assert lines["bounded"] == " [1, 2] False"
    assert "only steps: [0, 1, 2, 3]" in printed["mlx"]
    proc = run("-m", "compat", "crosscheck", str(SCRIPTS / "eos_cut.py"), ckpt)
    assert proc.returncode == 0 and " 0 mismatch" in proc.stdout and "PASS" in proc.stdout, proc.stdout[-3000:]
