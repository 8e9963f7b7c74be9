"""nnsight's everyday envoy surface: rename aliases, barriers, navigation."""

import mlx.core as mx
import pytest

import mlxsight


@pytest.fixture(scope="module")
def renamed(stories_path):
    return mlxsight.LanguageModel(stories_path, view="mlx", rename={
        "model.layers": "h", "self_attn": "attn", "mlp.down_proj": "mlp.c_proj", "*.layers": "layers"})


def test_aliases_are_the_same_envoys(renamed):
    assert renamed.h is renamed.model.layers  # bound where the dotted key resolves: the root
    assert renamed.h[0].attn is renamed.model.layers[0].self_attn
    assert renamed.layers is renamed.model.layers  # "*.layers": "layers" from the root: * matched "model"
    assert renamed.model.layers[2].mlp.c_proj is renamed.model.layers[2].mlp.down_proj
    assert renamed.h[1].attn.path == "model.model.layers.1.self_attn"  # paths stay native


def test_aliases_work_inside_traces(renamed, prompt):
    with renamed.trace(prompt):
        a = renamed.h[1].attn.output.save()
        b = renamed.model.layers[1].self_attn.output.save()
    assert mx.array_equal(a, b)


def test_alias_that_shadows_is_rejected(stories_path):
    model = mlxsight.LanguageModel(stories_path, view="mlx", rename={"mlp": "self_attn"})
    with pytest.raises(ValueError, match="shadow"):
        model.model.layers[0].self_attn_typo  # noqa: B018


def test_barrier_is_accepted_and_keeps_nnsights_error(stories):
    with stories.trace() as tracer:
        barrier = tracer.barrier(2)
        with tracer.invoke("Lily went"):
            h = stories.model.layers[2].output[:, -1].save()
            barrier()
        with tracer.invoke("Tom went"):
            barrier()
            stories.model.layers[2].output[:, -1] = h
            out = stories.model.layers[2].output.save()
    assert mx.array_equal(out[:, -1], h)
    with pytest.raises(ValueError, match="never reached by every block"):
        with stories.trace() as tracer:
            barrier = tracer.barrier(2)
            with tracer.invoke("Lily went"):
                barrier()


def test_repr_mirrors_the_tree_with_collapsed_runs_and_aliases(renamed):
    text = repr(renamed)
    assert "(layers): ModuleList(" in text and "(0-4): 5 x TransformerBlock(" in text
    assert "(attn/self_attn): Attention(" in text
    assert text.count("TransformerBlock(") == 1


# -- a list of modules is an Envoy; aliases and spellings as nnsight states them ---------------------
def test_a_module_list_is_an_envoy_with_list_behaviour(stories):
    from mlxsight.envoy import Envoy

    layers = stories.model.layers
    modules = stories.mlx_model.model.layers
    assert type(layers) is Envoy and len(layers) == len(modules) == 5 and bool(layers)
    assert [e._module for e in layers] == list(modules)  # iteration: the entries, in order
    assert layers[-1] is layers[4] is layers["4"] is getattr(layers, "4") is getattr(layers, "-1")
    assert not hasattr(layers, "5")
    assert layers[1:3] == [layers[1], layers[2]] and layers[4].parent is layers
    assert layers.path == "model.model.layers" and layers[2].path == "model.model.layers.2"
    assert stories.get("model.layers.-1") is layers[4]
    with pytest.raises(IndexError, match="out of range"):
        layers[5]
    with pytest.raises(TypeError, match="has no len"):
        len(stories.model)  # a module has no length, as in torch
    assert bool(stories.model)
    text = repr(layers)
    assert text.startswith("ModuleList(") and "(0-4): 5 x TransformerBlock(" in text
    assert layers not in stories.modules() and layers[0] in stories.modules()


def test_envoys_map_applies_to_module_lists(stories_path):
    from mlxsight.envoy import Envoy

    class Layers(Envoy):
        pass

    class Block(Envoy):
        pass

    model = mlxsight.LanguageModel(stories_path, view="mlx", rename={"model.layers": "blocks"},
                                   envoys={"blocks": Layers, "model.layers.*": Block})
    assert type(model.blocks) is Layers and model.blocks is model.model.layers
    assert all(type(b) is Block for b in model.model.layers) and type(model.model.layers[0].mlp) is Envoy
    with model.trace("Once upon a time"):
        out = model.blocks[2].output.save()
    with model.trace("Once upon a time"):
        ref = model.model.layers[2].output.save()
    assert mx.array_equal(out, ref)


def test_aliases_record_the_path_they_name_from_their_host(renamed):
    assert renamed._aliases == {"h": "model.layers", "layers": "model.layers"}
    assert renamed.model.layers[0]._aliases == {"attn": "self_attn"}
    assert renamed.model.layers[0].mlp._aliases == {"c_proj": "down_proj"}
    assert renamed.model.layers[0].self_attn._aliases == {}


def test_spellings_compose_through_ancestors():
    from mlxsight.envoy import spellings

    rename = {"transformer.h": "layers", "attn": "self_attn", "attn.c_proj": "attn.o_proj"}
    assert spellings(rename, "model.transformer.h.0.attn.c_proj") == [
        "model.transformer.h.0.attn.c_proj", "model.layers.0.attn.c_proj",
        "model.transformer.h.0.self_attn.c_proj", "model.layers.0.self_attn.c_proj",
        "model.transformer.h.0.attn.o_proj", "model.layers.0.attn.o_proj",
        "model.transformer.h.0.self_attn.o_proj", "model.layers.0.self_attn.o_proj"]
    assert spellings(None, "model.a.b") == ["model.a.b"] and spellings(rename, "model") == ["model"]
    assert spellings({"*.h": "layers"}, "model.transformer.h") == ["model.transformer.h", "model.layers"]


def test_a_class_key_alias_spells_only_its_module():
    import mlx.nn as nn

    from mlxsight.envoy import spellings

    assert spellings({nn.Linear: "proj"}, "model.mlp.fc", nn.Linear(2, 2)) == ["model.mlp.fc", "model.mlp.proj"]
    assert spellings({nn.Linear: "proj"}, "model.mlp.fc.inner") == ["model.mlp.fc.inner"]


def test_a_list_of_aliases_binds_each_one(stories_path):
    # nnsight's rename values may be lists (docs/usage/rename-modules.md: "transformer": ["mdl", "backbone"])
    model = mlxsight.LanguageModel(stories_path, view="mlx", rename={
        "model": ["mdl", "backbone"], "mlp.down_proj": ["mlp.c_proj", "mlp.out"]})
    assert model.mdl is model.model and model.backbone is model.model
    assert model.backbone.layers[1].mlp.c_proj is model.model.layers[1].mlp.down_proj
    assert model.mdl.layers[1].mlp.out is model.model.layers[1].mlp.down_proj
    with model.trace("Lily went"):
        a = model.mdl.layers[0].output.save()
        b = model.backbone.layers[0].output.save()
        c = model.model.layers[0].output.save()
    assert mx.array_equal(a, c) and mx.array_equal(b, c)
