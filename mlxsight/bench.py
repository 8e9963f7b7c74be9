"""Benchmark: the cost of tracing, measured side by side in one run.

    MLXSIGHT_OPENBLAS=1 python -m mlxsight bench      # Linux: opt in to the system OpenBLAS first

Prints median wall times and ratios for a plain forward and for traces on a ~30M-parameter
Llama-style model (128 tokens), and the fixed per-trace overhead on the bundled tiny model,
next to nnsight's own overhead on the same checkpoint (torch, CPU) when nnsight is installed, and
SAE training throughput next to SAELens's trainer (``mlxsight.tools.sae_bench``).

The fixed overhead is measured as traced minus plain forward over thousands of alternating pairs
(``--pairs``): the median of the per-pair differences, with a 95% confidence interval from order
statistics; and, next to it, the difference of the two timings' 10% quantiles with a bootstrap
interval over whole pairs, which leaves out most of what a busy machine adds (waits for the CPU are
never negative, so the low quantiles are the runs that waited least). mlxsight's and nnsight's are
measured the same way in the same run, in turns, so machine load hits both alike.
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

LOW_QUANTILE = 0.1  # the overhead's load-robust estimate: traced minus plain at this quantile (Overhead.low)
TARGETS = {"one_save_full": 1.03, "early_only": 0.45, "overhead_vs_nnsight": 0.10, "logit_lens": 1.5}


class Overhead:
    """Paired timings of a plain forward and a trace: medians and the per-pair differences."""

    def __init__(self) -> None:
        self.plain: list[float] = []
        self.traced: list[float] = []
        self.diffs: list[float] = []

    def add(self, plain: float, traced: float) -> None:
        self.plain.append(plain)
        self.traced.append(traced)
        self.diffs.append(traced - plain)

    @property
    def median(self) -> float:
        return statistics.median(self.diffs)

    def interval(self) -> tuple[float, float]:
        """A 95% confidence interval of the median difference (order statistics, normal approx.)."""
        d = sorted(self.diffs)
        n = len(d)
        half = 1.96 * (n ** 0.5) / 2
        lo, hi = max(0, int(n / 2 - half)), min(n - 1, int(n / 2 + half))
        return d[lo], d[hi]

    def low(self, q: float = LOW_QUANTILE) -> float:
        """The ``q``-quantile of the traced times minus that of the plain times. On a busy machine
        a timing is its cost plus a wait for the CPU that is never negative; the low quantiles are
        the runs that waited least, so their difference carries far less of the load's noise than
        the median of the pair differences does (timeit's minimum, made robust)."""
        import numpy as np

        return float(np.quantile(self.traced, q) - np.quantile(self.plain, q))

    def low_interval(self, q: float = LOW_QUANTILE, resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
        """A 95% bootstrap interval of ``low(q)``, resampling whole pairs (so drift stays paired)."""
        import numpy as np

        plain, traced = np.asarray(self.plain), np.asarray(self.traced)
        picks = np.random.default_rng(seed).integers(0, len(plain), (resamples, len(plain)))
        lows = np.quantile(traced[picks], q, axis=1) - np.quantile(plain[picks], q, axis=1)
        return float(np.quantile(lows, 0.025)), float(np.quantile(lows, 0.975))

    def as_tuple(self) -> tuple[float, float, float]:
        return statistics.median(self.plain), statistics.median(self.traced), self.median


def paired_overhead(plain: Callable[[], object], traced: Callable[[], object], repeats: int,
                    warmup: int = 5) -> tuple[float, float, float]:
    """Median plain time, median traced time, and the median of per-pair differences.

    Alternating the two in each iteration cancels most of the drift a busy machine adds."""
    result = Overhead()
    measure_pairs({"x": (plain, traced)}, {"x": result}, repeats, warmup)
    return result.as_tuple()


def measure_pairs(pairs: dict[str, tuple[Callable[[], object], Callable[[], object]]],
                  results: dict[str, Overhead], repeats: int, warmup: int = 5) -> None:
    """``repeats`` rounds; each round times every (plain, traced) pair once, the pairs in turns."""
    for _ in range(warmup):
        for plain, traced in pairs.values():
            plain(), traced()
    clock = time.perf_counter
    for i in range(repeats):
        for name, (plain, traced) in pairs.items():
            if i % 2:  # alternate which runs first, so neither always follows the other
                start = clock()
                traced()
                mid = clock()
                plain()
                end = clock()
                results[name].add(end - mid, mid - start)
            else:
                start = clock()
                plain()
                mid = clock()
                traced()
                end = clock()
                results[name].add(mid - start, end - mid)


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


def overhead_pair_mlx() -> tuple[Callable[[], object], Callable[[], object]]:
    """A plain forward and a trace saving the logits, on the bundled stories260K."""
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

    return plain, traced


def overhead_parts(repeats: int) -> dict[str, float]:
    """Where mlxsight's fixed overhead goes: medians of the trace's Python bookkeeping alone (the
    same block under ``model.scan``: enter, encode and id check, record, compile (a cache hit),
    push, exit; no forward), the id check alone (one small MLX evaluation: MLX gathers embedding
    rows unchecked), and for scale the plain forward's graph building (Python, not evaluated)."""
    from .batching import check_ids

    path = assets.path("stories260k")
    model = LanguageModel(path, view="mlx")
    ids = mx.array([model.tokenizer("Once upon a time there was a little girl")["input_ids"]])
    module, vocab = model.mlx_model, model._driver.vocab_size

    def bookkeeping():
        with model.scan(ids):
            out = model.output.save()
        return out

    return round_robin({"bookkeeping": bookkeeping, "id check": lambda: check_ids([ids], vocab),
                        "graph build": lambda: module(ids)}, repeats, warmup=20)


def overhead_pair_nnsight() -> tuple[Callable[[], object], Callable[[], object]] | None:
    """The same pair through nnsight (torch, CPU, one thread), or None without nnsight."""
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

    return plain, traced


def bench_overhead(pairs: int, with_nnsight: bool) -> dict[str, Overhead]:
    """Fixed per-trace overhead of mlxsight (and nnsight), measured in the same rounds."""
    measured = {"mlxsight": overhead_pair_mlx()}
    if with_nnsight:
        nn_pair = overhead_pair_nnsight()
        if nn_pair is not None:
            measured["nnsight"] = nn_pair
    results = {name: Overhead() for name in measured}
    measure_pairs(measured, results, pairs, warmup=20)
    return results


def word_tokenizer(vocab: int):
    """A word-level tokenizer naming each id of a random model (``w0`` ... ``w{vocab-1}``)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(vocab)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="w1")


def bench_logit_lens(repeats: int, tokens: int) -> dict[str, float]:
    """``tools.logit_lens`` over all layers (all positions, and the last one) vs one plain forward,
    and the compute floor: the forward plus every layer's final norm and unembedding in plain MLX,
    evaluated (the matmuls any ``[layers, T, vocab]`` lens must do before normalising)."""
    import numpy as np

    from .tools import logit_lens  # the bench measures the toolkit too; the core never imports it

    module = build_llama()
    # mlx-lm's own tree: the plain forward below is that module's, so the ratio is the lens's own cost
    model = LanguageModel(module, tokenizer=word_tokenizer(module.args.vocab_size), view="mlx")
    ids = np.random.default_rng(0).integers(2, module.args.vocab_size, tokens).tolist()
    x = mx.array([ids])
    inner = module.model

    def plain():
        mx.eval(module(x))

    def floor():
        h, states = inner.embed_tokens(x), []
        for layer in inner.layers:
            h = layer(h, "causal", None)
            states.append(h[0])
        mx.eval(module.lm_head(inner.norm(mx.stack(states))))

    variants = {"plain": plain, "floor": floor, "lens_all": lambda: logit_lens(model, ids),
                "lens_last": lambda: logit_lens(model, ids, positions=[-1])}
    return round_robin(variants, repeats)


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
                        x = layers[i].input
                        x[:, pos] = h
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
    return verdicts + bench_patching_compute_bound(repeats)


def bench_patching_compute_bound(repeats: int, tokens: int = 32) -> list[bool]:
    """The last-position layer sweep on the ~30M Llama, where compute, not trace overhead, dominates."""
    import numpy as np

    from . import tools

    model = LanguageModel(build_llama(), tokenizer=LanguageModel(assets.path("stories260k")).tokenizer)
    layers = model.model.layers
    rng = np.random.default_rng(0)
    clean, corrupt = rng.integers(1, 8192, tokens).tolist(), rng.integers(1, 8192, tokens).tolist()
    metric = tools.logit_diff(5, 6)

    def naive() -> np.ndarray:
        out = np.zeros(len(layers), dtype=np.float32)
        for i in range(len(layers)):
            with model.trace() as tracer:
                with tracer.invoke([clean]):
                    h = layers[i].input[:, -1]
                with tracer.invoke([corrupt]):
                    x = layers[i].input
                    x[:, -1] = h
                    logits = model.output.logits[0, -1].save()
            out[i] = float(logits[5] - logits[6])
        return out

    def sweep() -> np.ndarray:
        return tools.activation_patching(model, clean, corrupt, metric, positions=[-1], progress=False).scores[:, 0]

    times = round_robin({"naive": naive, "sweep": sweep}, repeats, warmup=1)
    diff = float(np.abs(sweep() - naive()).max())
    ratio = times["sweep"] / times["naive"]
    ok = ratio <= PATCH_TARGETS["last_position"]
    print(f"  ~30M Llama, {tokens} random tokens, last position x 8 layers: naive {times['naive'] * 1e3:7.1f} ms, "
          f"sweep {times['sweep'] * 1e3:7.1f} ms, {ratio:5.2f}x  max |diff| {diff:.1e}  "
          f"target <= {PATCH_TARGETS['last_position']:.2f}x: {'met' if ok else 'MISSED'}")
    return [ok]


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
    parser.add_argument("--pairs", type=int, default=2000,
                        help="alternating (plain, trace) pairs for the fixed overhead (default 2000)")
    parser.add_argument("--no-nnsight", action="store_true", help="skip the nnsight comparison")
    parser.add_argument("--no-sae", action="store_true", help="skip SAE training throughput (mlxsight vs SAELens)")
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

    overhead = bench_overhead(args.pairs, not args.no_nnsight)
    print(f"\nfixed per-trace overhead on the bundled stories260K (trace saving the logits minus plain forward, "
          f"{args.pairs} alternating pairs, median difference [95% CI]):")
    for name, result in overhead.items():
        p, t, d = result.as_tuple()
        lo, hi = result.interval()
        note = "  (torch, 1 thread)" if name == "nnsight" else ""
        low, (l_lo, l_hi) = result.low(), result.low_interval()
        print(f"  {name + ':':<9} plain {p * 1e3:7.3f} ms, trace {t * 1e3:7.3f} ms, overhead {d * 1e3:7.3f} ms "
              f"[{lo * 1e3:.3f}, {hi * 1e3:.3f}]; at the {LOW_QUANTILE:.0%} quantiles {low * 1e3:7.3f} ms "
              f"[{l_lo * 1e3:.3f}, {l_hi * 1e3:.3f}]{note}")
    parts = overhead_parts(max(200, args.pairs // 3))
    print(f"  of mlxsight's, measured apart (medians): Python bookkeeping of the same trace without its "
          f"forward (model.scan) {parts['bookkeeping'] * 1e3:.3f} ms, of which the input id check "
          f"{parts['id check'] * 1e3:.3f} ms; for scale, building the plain forward's lazy graph "
          f"{parts['graph build'] * 1e3:.3f} ms")
    if "nnsight" in overhead:
        ratio = overhead["mlxsight"].median / overhead["nnsight"].median
        ok = ratio <= TARGETS["overhead_vs_nnsight"]
        verdicts.append(ok)
        (m_lo, m_hi), (n_lo, n_hi) = overhead["mlxsight"].interval(), overhead["nnsight"].interval()
        spread = f" (from the intervals {m_lo / n_hi:.3f} to {m_hi / n_lo:.3f})" if n_lo > 0 else ""
        m_low, n_low = overhead["mlxsight"].low(), overhead["nnsight"].low()
        if n_low > 0:
            print(f"  at the {LOW_QUANTILE:.0%} quantiles (the load's noise mostly left out): "
                  f"mlxsight / nnsight = {m_low / n_low:.3f}")
        print(f"  mlxsight overhead / nnsight overhead = {ratio:.3f}{spread}  "
              f"target <= {TARGETS['overhead_vs_nnsight']:.2f}: {'met' if ok else 'MISSED'}")
    elif not args.no_nnsight:
        print("  nnsight: not installed (pip install -e '.[test]'), no comparison")
    lens = bench_logit_lens(args.repeats, args.tokens)
    print(f"\ntools.logit_lens on the same model, all 8 layers (median of {args.repeats}, in turns):")
    base = lens["plain"]
    ok = lens["lens_all"] / base <= TARGETS["logit_lens"]
    verdicts.append(ok)
    print(f"  {'plain forward':<40} {base * 1e3:8.2f} ms  1.00x")
    print(f"  {f'lens, all {args.tokens} positions':<40} {lens['lens_all'] * 1e3:8.2f} ms  {lens['lens_all'] / base:5.2f}x"
          f"  target <= {TARGETS['logit_lens']:.2f}x: {'met' if ok else 'MISSED'}")
    print(f"  {'  floor: forward + 8 unembeddings':<40} {lens['floor'] * 1e3:8.2f} ms  {lens['floor'] / base:5.2f}x"
          f"  (lens / floor {lens['lens_all'] / lens['floor']:.2f}x)")
    print(f"  {'lens, last position':<40} {lens['lens_last'] * 1e3:8.2f} ms  {lens['lens_last'] / base:5.2f}x")

    verdicts += bench_patching(max(5, args.repeats // 2)) + bench_steering(max(5, args.repeats // 2))
    if not args.no_sae:
        from .tools.sae_bench import report as sae_report

        sae_report()
    print(f"\n{sum(verdicts)}/{len(verdicts)} targets met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
