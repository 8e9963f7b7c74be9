"""Sparse autoencoders: train one on the residual stream, save it in SAELens's format, load it back,
splice it into a trace, read its features and steer generation with one.

    python examples/tools_sae.py [OUT_DIR]
"""

import sys
import tempfile

import mlxsight  # before mlx: loads OpenBLAS first when MLXSIGHT_OPENBLAS is set (Linux)
import mlx.core as mx
import numpy as np
from mlxsight import assets, tools
from mlxsight.tools.sae_train import TrainConfig, evaluate, train_sae

model = mlxsight.LanguageModel(assets.path("stories260k"))
texts = tools.sample_corpus(model, 128, max_tokens=128)  # the model's own stories, generated once and cached

# Train a TopK SAE on the residual stream after layer 2 (a short run; see docs/sae.md for a longer one).
config = TrainConfig(architecture="topk", d_sae=256, k=8, steps=150, batch_size=512)
sae, log = train_sae(model, "blocks.2.hook_resid_post", texts[:112], config, buffer_capacity=16384,
                     log_every=50, progress=False)
figures = evaluate(model, sae, texts[112:])
print(f"trained: FVU {figures['fvu']:.3f}, L0 {figures['l0']:.1f}, CE loss recovered {figures['ce_recovered']:.1%}")

# SAELens's format both ways: this directory loads in sae_lens.SAE.load_from_disk too.
out = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()
sae.save(out, model_name="stories260k")
sae = tools.SAE.load(out)
print(sae)

# Splice: the forward is unchanged until features are edited.
prompt = "Once upon a time, there was a little girl named Lily. She loved to play with her ball."
with model.trace(prompt):
    plain = model.output.logits.save()
with model.trace(prompt):
    features = tools.splice(model, sae).save()
    spliced = model.output.logits.save()
print(f"spliced forward unchanged: {bool(mx.allclose(plain, spliced, atol=1e-4))}")

# Which features fire on the prompt, and where.
acts = tools.feature_activations(model, sae, prompt, top=3)
for j, f in enumerate(acts.feature_ids):
    peak = int(np.argmax(acts.acts[:, j]))
    print(f"feature {f}: peaks at {acts.tokens[peak]!r} ({acts.acts[peak, j]:.2f})")

# Ablate the strongest one: the next-token distribution moves.
with model.trace(prompt):
    tools.ablate(model, sae, int(acts.feature_ids[0]))
    ablated = model.output.logits.save()
print(f"ablating feature {acts.feature_ids[0]} moves the last logits by {float(mx.abs(ablated - plain)[0, -1].max()):.3f}")

# Steer generation with a feature's decoder direction at every step.
feature = int(acts.feature_ids[0])
with model.generate("Once upon a time", max_new_tokens=20) as tracer:
    for _ in tracer.iter[:20]:
        tools.steer_features(model, sae, {feature: 6.0})
    steered = tracer.result.save()
print("steered:", model.tokenizer.decode(steered[0].tolist(), skip_special_tokens=True))
