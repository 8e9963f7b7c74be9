"""The SAELens side of the SAE checks: runs under the SAELens interpreter, never under mlxsight's.

It imports only torch, safetensors and ``sae_lens`` (SAELens's pins conflict with ours, so it lives
in its own venv: ``python -m mlxsight.tools.sae_reference_env``). Three commands:

    build OUT            SAEs of every architecture, built and saved by SAELens, with their outputs
    check DIR [DIR ...]  load each SAELens-format DIR with SAELens; write its outputs on DIR's inputs
    train-bench ACTS CFG time SAELens's own trainer (SAETrainer) on the activations in ACTS
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

warnings.simplefilter("ignore")

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

D_IN, D_SAE, ROWS = 64, 256, 96
INPUTS = "inputs.safetensors"
OUTPUTS = "saelens_outputs.safetensors"


def _cases():
    from sae_lens import (GatedSAE, GatedSAEConfig, JumpReLUSAE, JumpReLUSAEConfig, StandardSAE, StandardSAEConfig,
                          TopKSAE, TopKSAEConfig)

    meta = {"hook_name": "blocks.2.hook_resid_post", "model_name": "stories260k"}
    return {
        "standard": (StandardSAE, StandardSAEConfig, {}),
        "standard_no_b_dec_in": (StandardSAE, StandardSAEConfig, {"apply_b_dec_to_input": False}),
        "standard_constant_norm": (StandardSAE, StandardSAEConfig, {"normalize_activations": "constant_norm_rescale"}),
        "standard_layer_norm": (StandardSAE, StandardSAEConfig, {"normalize_activations": "layer_norm"}),
        "jumprelu": (JumpReLUSAE, JumpReLUSAEConfig, {}),
        "jumprelu_gemmascope_style": (JumpReLUSAE, JumpReLUSAEConfig, {"apply_b_dec_to_input": False}),
        "topk": (TopKSAE, TopKSAEConfig, {"k": 8}),
        "topk_rescaled": (TopKSAE, TopKSAEConfig, {"k": 8, "rescale_acts_by_decoder_norm": True}),
        "gated": (GatedSAE, GatedSAEConfig, {}),
    }, meta


def _randomise(sae, seed: int) -> None:
    """Random parameters with the scales trained SAEs have, so every code path fires."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sae.named_parameters():
            if name == "threshold":
                p.copy_(torch.rand(p.shape, generator=g) * 0.5)
            elif name == "W_dec":
                p.copy_(torch.randn(p.shape, generator=g) * (0.5 + torch.rand(p.shape[0], 1, generator=g)) / 8)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (0.2 if p.ndim == 1 else 1 / 8))


def _outputs(sae, x: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        feats = sae.encode(x)
        out = {"encode": feats, "forward": sae(x)}
        if sae.cfg.normalize_activations not in ("constant_norm_rescale", "layer_norm"):
            out["decode"] = sae.decode(feats)
    return {k: v.contiguous() for k, v in out.items()}


def build(out: Path) -> None:
    from sae_lens import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig, SAE
    from sae_lens.saes.sae import SAEMetadata

    cases, meta = _cases()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(ROWS, D_IN, generator=g) * 2 + torch.randn(D_IN, generator=g)
    for i, (name, (cls, cfg_cls, kwargs)) in enumerate(cases.items()):
        sae = cls(cfg_cls(d_in=D_IN, d_sae=D_SAE, metadata=SAEMetadata(**meta), **kwargs))
        _randomise(sae, i)
        sae.save_model(out / name)
        save_file({"x": x}, str(out / name / INPUTS))
        save_file(_outputs(sae, x), str(out / name / OUTPUTS))
        if name.startswith(("standard", "jumprelu", "gated")) or name == "topk_rescaled":
            folded = SAE.load_from_disk(str(out / name), fold_W_dec_norm=True)
            save_file({f"folded_{k}": v for k, v in _outputs(folded, x).items()},
                      str(out / name / "saelens_folded_outputs.safetensors"))

    # A BatchTopK SAE trained by SAELens is saved for inference as JumpReLU.
    bt = BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=8, metadata=SAEMetadata(**meta)))
    _randomise(bt, 99)
    bt.topk_threshold = torch.tensor(0.3, dtype=torch.double)
    bt.save_inference_model(out / "batchtopk_as_jumprelu")
    loaded = SAE.load_from_disk(str(out / "batchtopk_as_jumprelu"))
    save_file({"x": x}, str(out / "batchtopk_as_jumprelu" / INPUTS))
    save_file(_outputs(loaded, x), str(out / "batchtopk_as_jumprelu" / OUTPUTS))

    # A pre-6.0 config (top-level hook_point, activation_fn_str="topk"), as older checkpoints have.
    old = out / "topk_pre6_config"
    sae = cases["topk"][0](cases["topk"][1](d_in=D_IN, d_sae=D_SAE, k=8, metadata=SAEMetadata(**meta)))
    _randomise(sae, 123)
    sae.save_model(old)
    (old / "cfg.json").write_text(json.dumps({
        "architecture": "standard", "d_in": D_IN, "d_sae": D_SAE, "dtype": "float32", "device": "cpu",
        "hook_point": meta["hook_name"], "hook_point_layer": 2, "model_name": "stories260k",
        "activation_fn_str": "topk", "activation_fn_kwargs": {"k": 8}, "apply_b_dec_to_input": True,
        "normalize_activations": False, "sae_lens_training_version": "3.0.0"}))
    loaded = SAE.load_from_disk(str(old))
    save_file({"x": x}, str(old / INPUTS))
    save_file(_outputs(loaded, x), str(old / OUTPUTS))
    print(json.dumps({"built": sorted(p.name for p in out.iterdir() if p.is_dir())}))


def check(dirs: list[Path]) -> None:
    from sae_lens import SAE

    report = {}
    for d in dirs:
        sae = SAE.load_from_disk(str(d))
        x = load_file(str(d / INPUTS))["x"]
        save_file(_outputs(sae, x), str(d / OUTPUTS))
        report[d.name] = {"architecture": sae.cfg.architecture(), "hook_name": sae.cfg.metadata.hook_name,
                          "d_sae": sae.cfg.d_sae}
    print(json.dumps(report))


def train_bench(acts_path: Path, cfg_path: Path) -> None:
    """SAELens's own SAETrainer (Adam, grad clipping, dead-feature window, TopK aux loss) over the
    given activations; prints activations per second over the timed steps."""
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    cfg = json.loads(cfg_path.read_text())
    torch.set_num_threads(cfg.get("threads", 1))
    acts = load_file(str(acts_path))["acts"]
    batch, warmup, steps = cfg["batch"], cfg["warmup"], cfg["steps"]
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=acts.shape[1], d_sae=cfg["d_sae"], k=cfg["k"],
                                                rescale_acts_by_decoder_norm=False))

    def batches():
        i = 0
        while True:
            if i + batch > acts.shape[0]:
                i = 0
            yield acts[i:i + batch]
            i += batch

    trainer_cfg = SAETrainerConfig(total_training_samples=batch * (warmup + steps), train_batch_size_samples=batch,
                                   lr=cfg["lr"], n_batches_for_norm_estimate=1)
    trainer = SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=batches())
    data = batches()
    for _ in range(warmup):
        trainer._train_step(sae, next(data))
    start = time.perf_counter()
    for _ in range(steps):
        trainer._train_step(sae, next(data))
    elapsed = time.perf_counter() - start
    print(json.dumps({"acts_per_s": batch * steps / elapsed, "seconds": elapsed, "steps": steps,
                      "torch_threads": torch.get_num_threads()}))


def main(argv: list[str]) -> int:
    command, args = argv[0], [Path(a) for a in argv[1:]]
    if command == "build":
        args[0].mkdir(parents=True, exist_ok=True)
        build(args[0])
    elif command == "check":
        check(args)
    elif command == "train-bench":
        train_bench(args[0], args[1])
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
