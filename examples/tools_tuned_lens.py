"""tools.TunedLens: train per-layer affine translators on text the bundled model samples itself,
compare the held-out KL to the logit lens, save in the tuned-lens package's format and reload.

    python examples/tools_tuned_lens.py
"""

import tempfile

import mlxsight  # before mlx: loads OpenBLAS first when MLXSIGHT_OPENBLAS is set (Linux)
import numpy as np
from mlxsight import assets, tools

model = mlxsight.LanguageModel(assets.path("stories260k"))
corpus = tools.sample_corpus(model, n=64, max_tokens=64)  # cached after the first run
print(f"corpus: {len(corpus)} sampled stories, e.g. {corpus[0][:60]!r}...")
lens = tools.TunedLens.train(model, corpus, steps=80, seq_len=32, batch_size=8, lr=3e-3, progress=False)
print("held-out KL(final || lens), nats, per translator (0 = embeddings):")
for i, (logit, tuned) in enumerate(zip(lens.held_out_kl["logit"], lens.held_out_kl["tuned"])):
    print(f"  {i}: logit lens {logit:6.2f}   tuned lens {tuned:5.2f}")

with tempfile.TemporaryDirectory() as tmp:
    lens.save(tmp)  # config.json + params.pt, as tuned-lens 0.2.0 writes them
    loaded = tools.TunedLens.load(tmp)
prompt = "Once upon a time, there was a little girl named Lily. She loved to play"
tuned = loaded(model, prompt, targets="next", include_embeddings=True)
logit = tools.logit_lens(model, prompt, targets="next", include_embeddings=True)
print("mean NLL per row  logit:", np.round(np.nanmean(logit.target_nll, 1), 2))
print("                  tuned:", np.round(np.nanmean(tuned.target_nll, 1), 2))
print(f"reloaded lens equals the trained one: {np.array_equal(loaded.weight, lens.weight)}")
