"""SAE training throughput: mlxsight's compiled MLX step next to SAELens's own trainer (torch, CPU).

Both train the same TopK configuration (d_sae, k, batch, Adam at the same learning rate, gradient
clipping, AuxK) on the same activations: stories260K's residual stream after layer 2, sampled from
the model's own text. SAELens runs in its venv (``python -m mlxsight.tools.sae_reference_env``), as
a subprocess; without it the row says so.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import mlx.core as mx
import numpy as np

from . import sae_reference_env
from .sae_train import ActivationBuffer, TrainConfig, Trainer

D_SAE, K, BATCH, LR = 512, 8, 4096, 1e-3


def activations(n: int = 65_536) -> np.ndarray:
    """``n`` residual-stream activations of stories260K (layer 2), scaled to mean norm sqrt(d)."""
    from .. import assets
    from ..model import LanguageModel
    from .corpus import sample_corpus

    model = LanguageModel(assets.path("stories260k"))
    buffer = ActivationBuffer(model, "blocks.2.hook_resid_post", sample_corpus(model, 256, max_tokens=128), capacity=n)
    buffer.next_batch(1)
    acts = buffer.store.astype(np.float32)
    return acts * (np.sqrt(acts.shape[1]) / np.linalg.norm(acts, axis=-1).mean())


def mlx_throughput(acts: np.ndarray, steps: int, warmup: int = 5) -> float:
    trainer = Trainer(TrainConfig(architecture="topk", d_sae=D_SAE, k=K, lr=LR, batch_size=BATCH), acts.shape[1])
    data = mx.array(acts)
    n = acts.shape[0] // BATCH

    def run(count: int, offset: int) -> None:
        for i in range(count):
            j = (offset + i) % n
            mx.eval(trainer.step(data[j * BATCH:(j + 1) * BATCH]))

    run(warmup, 0)
    start = time.perf_counter()
    run(steps, warmup)
    return BATCH * steps / (time.perf_counter() - start)


def saelens_throughput(acts: np.ndarray, steps: int, warmup: int = 5) -> dict | None:
    if sae_reference_env.python() is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "acts.safetensors"
        mx.save_safetensors(str(path), {"acts": mx.array(acts)})
        cfg = Path(tmp) / "cfg.json"
        cfg.write_text(json.dumps({"d_sae": D_SAE, "k": K, "batch": BATCH, "lr": LR, "warmup": warmup,
                                   "steps": steps, "threads": os.cpu_count() or 1}))
        return sae_reference_env.run("train-bench", str(path), str(cfg), timeout=900)


def report(steps: int = 30) -> None:
    print(f"\nSAE training throughput (TopK, d_in 64, d_sae {D_SAE}, k {K}, batch {BATCH}, Adam + clipping + AuxK; "
          f"stories260K layer-2 residuals; {steps} timed steps after 5 warm-up steps):")
    acts = activations()
    before = mlx_throughput(acts, steps)
    theirs = saelens_throughput(acts, steps)
    if theirs is None:
        print(f"  mlxsight (MLX, compiled step): {before:10.0f} activations/s")
        print(f"  SAELens: {sae_reference_env.missing_reason()}")
        return
    # Measured before and after SAELens's run, so drift on a busy machine hits both sides alike.
    after = mlx_throughput(acts, steps)
    ours = (before + after) / 2
    print(f"  mlxsight (MLX, compiled step): {ours:10.0f} activations/s  (before/after SAELens: {before:.0f} / {after:.0f})")
    print(f"  SAELens SAETrainer (torch CPU, {theirs['torch_threads']} threads): {theirs['acts_per_s']:10.0f} activations/s")
    print(f"  mlxsight / SAELens = {ours / theirs['acts_per_s']:.2f}x")


if __name__ == "__main__":
    report()
