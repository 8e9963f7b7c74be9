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
