"""Benchmark: the cost of tracing, measured side by side in one run.

    MLXSIGHT_OPENBLAS=1 python -m mlxsight bench      # Linux: opt in to the system OpenBLAS first

Prints median wall times and ratios for a plain forward and for traces on a ~30M-parameter
Llama-style model (128 tokens), and the fixed per-trace overhead on the bundled tiny model,
next to nnsight's own overhead on the same checkpoint (torch, CPU) when nnsight is installed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable

import mlx.core as mx

from . import assets
from .model import LanguageModel, NNsight

TARGETS = {"one_save_full": 1.03, "early_only": 0.45, "overhead_vs_nnsight": 0.10}


def paired_overhead(plain: Callable[[], object], traced: Callable[[], object], repeats: int,
                    warmup: int = 5) -> tuple[float, float, float]:
    """Median plain time, median traced time, and the median of per-pair differences.

    Alternating the two in each iteration cancels most of the drift a busy machine adds."""
    for _ in range(warmup):
        plain(), traced()
    p_times, t_times, diffs = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        plain()
        mid = time.perf_counter()
        traced()
        end = time.perf_counter()
        p_times.append(mid - start)
        t_times.append(end - mid)
        diffs.append((end - mid) - (mid - start))
    return statistics.median(p_times), statistics.median(t_times), statistics.median(diffs)


def build_llama(hidden: int = 512, layers: int = 8, vocab: int = 8192, seed: int = 0):
    """A random ~30M-parameter mlx-lm Llama (fp32)."""
    from mlx_lm.models import llama

    mx.random.seed(seed)
    args = llama.ModelArgs(model_type="llama", hidden_size=hidden, num_hidden_layers=layers,
                           intermediate_size=hidden * 11 // 4, num_attention_heads=8, num_key_value_heads=8,
                           rms_norm_eps=1e-5, vocab_size=vocab, tie_word_embeddings=False)
    model = llama.Model(args)
    mx.eval(model.parameters())
    return model


def bench_large(repeats: int, tokens: int) -> dict[str, float]:
    module = build_llama()
    n_params = sum(v.size for _, v in __import__("mlx.utils").utils.tree_flatten(module.parameters()))
    model = NNsight(module)
    ids = mx.random.randint(0, 8192, (1, tokens))
    layers = model.model.layers

    def plain():
        mx.eval(module(ids))

    def one_save_full():
        with model.trace(ids):
            h = layers[4].output.save()
            out = model.output.save()
        return h, out

    def one_save_middle():
        with model.trace(ids):
            h = layers[4].output.save()
        return h

    def early_only():
        with model.trace(ids):
            h = layers[2].output.save()
        return h

    variants = {"plain": plain, "one_save_full": one_save_full, "one_save_middle": one_save_middle,
                "early_only": early_only}
    results = round_robin(variants, repeats)
    results["params"] = n_params
    return results


def round_robin(variants: dict[str, Callable[[], object]], repeats: int, warmup: int = 3) -> dict[str, float]:
    """Median time of each variant, measured in turns (a, b, c, a, b, c, ...) so drift hits all alike."""
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def bench_overhead_mlx(repeats: int) -> tuple[float, float]:
    path = assets.path("stories260k")
    model = LanguageModel(path, view="mlx")
    ids = mx.array([model.tokenizer("Once upon a time there was a little girl")["input_ids"]])
    module = model.mlx_model

    def plain():
        mx.eval(module(ids))

    def traced():
        with model.trace(ids):
            out = model.output.save()
        return out

    return paired_overhead(plain, traced, repeats)


def bench_overhead_nnsight(repeats: int) -> tuple[float, float, float] | None:
    try:
        import torch
        from nnsight import LanguageModel as NNsightLM  # mlx is already imported: the safe order
    except ImportError:
        return None
    import warnings

    warnings.simplefilter("ignore")
    path = str(assets.path("stories260k"))
    torch.set_grad_enabled(False)
    torch.set_num_threads(1)  # a tiny model: threads only add scheduling noise
    model = NNsightLM(path, dispatch=True, dtype=torch.float32)
    ids = model.tokenizer("Once upon a time there was a little girl", return_tensors="pt")["input_ids"]
    hf = model._module

    def plain():
        hf(ids)

    # nnsight reads a trace body's source from its file, so the traced body lives in this module.
    def traced():
        with model.trace(ids):
            out = model.output.save()
        return out

    return paired_overhead(plain, traced, repeats)


def blas_note() -> str:
    if not sys.platform.startswith("linux"):
        return "macOS: Accelerate"
    from . import blas

    loaded = blas.loaded()
    return f"OpenBLAS ({loaded})" if loaded else "mlx's reference BLAS (set MLXSIGHT_OPENBLAS=1 for OpenBLAS)"


PATCH_TARGETS = {"last_position": 0.5, "all_positions": 0.2}
NAME_CLEAN = "Once upon a time, there was a little girl named Lily. She was very happy. One day,"


def bench_patching(repeats: int) -> list[bool]:
    """tools.activation_patching vs the naive loop (one plain two-invoke patched trace per cell)."""
    import numpy as np

    from . import tools

    model = LanguageModel(assets.path("stories260k"))
    tok, layers = model.tokenizer, model.model.layers
    corrupt = NAME_CLEAN.replace("Lily", "Tim")
    lily, tim = tok.convert_tokens_to_ids("▁Lily"), tok.convert_tokens_to_ids("▁Tim")
    n_tokens = len(tok(NAME_CLEAN)["input_ids"])
    metric = tools.logit_diff(lily, tim)

    def naive(positions: list[int]) -> np.ndarray:
        out = np.zeros((len(layers), len(positions)), dtype=np.float32)
        for i in range(len(layers)):
            for j, pos in enumerate(positions):
                with model.trace() as tracer:
                    with tracer.invoke(NAME_CLEAN):
                        h = layers[i].input[:, pos]
                    with tracer.invoke(corrupt):
                        layers[i].input[:, pos] = h
                        logits = model.output.logits[0, -1].save()
                out[i, j] = float(logits[lily] - logits[tim])
        return out

    print(f"\nactivation patching sweeps on stories260K ('Lily' -> 'Tim', {n_tokens} tokens, {len(layers)} layers; "
          f"tools.activation_patching vs a loop of one two-invoke patched trace per cell, median of {repeats}):")
    verdicts = []
    for label, key, positions in [("last position x layers", "last_position", [n_tokens - 1]),
                                  ("all positions x layers", "all_positions", list(range(n_tokens)))]:
        def sweep(positions=positions):
            return tools.activation_patching(model, NAME_CLEAN, corrupt, metric, positions=positions,
                                             progress=False).scores

        times = round_robin({"naive": lambda positions=positions: naive(positions), "sweep": sweep},
                            repeats, warmup=1)
        diff = float(np.abs(sweep() - naive(positions)).max())
        ratio = times["sweep"] / times["naive"]
        ok = ratio <= PATCH_TARGETS[key]
        verdicts.append(ok)
        print(f"  {label:<24} naive {times['naive'] * 1e3:8.1f} ms, sweep {times['sweep'] * 1e3:7.1f} ms, "
              f"{ratio:5.2f}x  max |diff| {diff:.1e}  target <= {PATCH_TARGETS[key]:.2f}x: {'met' if ok else 'MISSED'}")
    return verdicts


def bench_steering(repeats: int, tokens: int = 64) -> list[bool]:
    """tools.generate_steered vs plain mlx_lm.generate, the same number of new tokens."""
    import mlx_lm
    import numpy as np

    from . import tools

    model = LanguageModel(assets.path("stories260k"))
    prompt = "Once upon a time"
    vector = np.full(model.config.hidden_size, 1e-3, dtype=np.float32)  # small: the text (and its length) stays
    steered = tools.generate_steered(model, prompt, vector, scales=[1.0], layer=2, max_new_tokens=tokens)
    n_new = len(steered.token_ids[0])
    ids = model.tokenizer(prompt)["input_ids"]

    def plain():
        return mlx_lm.generate(model.mlx_model, model.tokenizer, ids, max_tokens=n_new)

    def steer():
        return tools.generate_steered(model, prompt, vector, scales=[1.0], layer=2, max_new_tokens=n_new)

    times = round_robin({"plain": plain, "steered": steer}, repeats, warmup=2)
    ratio = times["steered"] / times["plain"]
    ok = ratio <= 1.0
    print(f"\nsteered generation on stories260K ({n_new} new tokens, vector added after layer 2 at every token; "
          f"median of {repeats}):")
    print(f"  mlx_lm.generate {times['plain'] * 1e3:7.1f} ms, tools.generate_steered {times['steered'] * 1e3:7.1f} ms, "
          f"{ratio:5.2f}x  target <= 1.00x: {'met' if ok else 'MISSED'}")
    return [ok]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlxsight bench", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--no-nnsight", action="store_true", help="skip the nnsight comparison")
    args = parser.parse_args(argv)

    print(f"mlxsight benchmark  (mlx {mx.__version__}, device {mx.default_device()}, BLAS: {blas_note()})")
    large = bench_large(args.repeats, args.tokens)
    plain = large["plain"]
    print(f"\n~{large['params'] / 1e6:.0f}M-parameter Llama, 8 layers, {args.tokens} tokens "
          f"(median of {args.repeats}, variants measured in turns):")
    rows = [
        ("plain forward", "plain", None),
        ("trace: save layer 4 + logits", "one_save_full", "one_save_full"),
        ("trace: save layer 4 only", "one_save_middle", None),
        ("trace: save layer 2 of 8 only", "early_only", "early_only"),
    ]
    verdicts = []
    for label, key, target in rows:
        ratio = large[key] / plain
        note = ""
        if target:
            ok = ratio <= TARGETS[target]
            verdicts.append(ok)
            note = f"  target <= {TARGETS[target]:.2f}x: {'met' if ok else 'MISSED'}"
        print(f"  {label:<32} {large[key] * 1e3:8.2f} ms  {ratio:5.2f}x{note}")

    repeats = max(args.repeats * 10, 100)
    p, t, mlx_overhead = bench_overhead_mlx(repeats)
    print(f"\nfixed per-trace overhead on the bundled stories260K (trace saving the logits vs plain forward, "
          f"alternating, median of {repeats} pairs):")
    print(f"  mlxsight: plain {p * 1e3:7.3f} ms, trace {t * 1e3:7.3f} ms, overhead {mlx_overhead * 1e3:7.3f} ms")
    if not args.no_nnsight:
        result = bench_overhead_nnsight(repeats)
        if result is None:
            print("  nnsight: not installed (pip install -e '.[test]'), no comparison")
        else:
            np_, nt, nn_overhead = result
            ratio = mlx_overhead / nn_overhead
            ok = ratio <= TARGETS["overhead_vs_nnsight"]
            verdicts.append(ok)
            print(f"  nnsight:  plain {np_ * 1e3:7.3f} ms, trace {nt * 1e3:7.3f} ms, overhead {nn_overhead * 1e3:7.3f} ms"
                  "  (torch, 1 thread)")
            print(f"  mlxsight overhead / nnsight overhead = {ratio:.3f}  "
                  f"target <= {TARGETS['overhead_vs_nnsight']:.2f}: {'met' if ok else 'MISSED'}")
    verdicts += bench_patching(max(3, args.repeats // 5)) + bench_steering(max(5, args.repeats // 2))
    print(f"\n{sum(verdicts)}/{len(verdicts)} targets met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
