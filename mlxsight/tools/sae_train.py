"""Training SAEs on MLX: an activation buffer filled from traces, and one compiled training step.

Architectures (``TrainConfig.architecture``), with the losses SAELens 6 uses:

- ``topk``: per-token TopK; MSE plus the AuxK loss (the top ``d_in // 2`` dead latents reconstruct
  the residual), unit-norm decoder rows. Saved as SAELens ``topk``.
- ``batchtopk``: the top ``k * batch`` activations across the batch; the same AuxK loss; a running
  threshold (EMA of the smallest kept activation) that makes it a JumpReLU at inference. Saved as
  SAELens ``jumprelu``.
- ``relu``: ReLU with an L1 penalty weighted by decoder-row norms; dead latents resampled. Saved
  as ``standard``.
- ``jumprelu``: JumpReLU with a learnt threshold, trained through the rectangle-kernel straight-
  through estimator and an L0 penalty; dead latents resampled. Saved as ``jumprelu``.

Activations are scaled so their mean norm is ``sqrt(d_in)`` while training (SAELens's
``expected_average_only_in``); the factor is folded into the weights of the SAE returned.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Sequence

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np

from .sae import SAE, Site

ARCHITECTURES = ("topk", "batchtopk", "relu", "jumprelu")


@dataclass
class TrainConfig:
    """Hyper-parameters of one SAE training run."""

    architecture: str = "topk"
    d_sae: int = 512
    k: int = 8                      # topk / batchtopk: active latents per token (batchtopk: on average)
    l1_coefficient: float = 1.0     # relu
    l0_coefficient: float = 0.5     # jumprelu
    jumprelu_bandwidth: float = 0.05
    jumprelu_init_threshold: float = 0.01
    aux_coefficient: float = 1.0 / 32  # topk / batchtopk AuxK
    batchtopk_threshold_lr: float = 0.01
    lr: float = 1e-3
    batch_size: int = 1024
    steps: int = 2000
    dead_after: int = 50_000        # a latent is dead after this many activations without firing
    resample_every: int = 500       # relu / jumprelu: steps between dead-latent resamplings (0: never)
    grad_clip: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")


# --- activations ----------------------------------------------------------------------------------

class ActivationBuffer:
    """Shuffled activations of one site, filled from traces over token contexts, in bounded memory.

    Holds at most ``capacity`` activations (``capacity * d * 4`` bytes). Batches are drawn from the
    shuffled store; when half of it has been served, that half is refilled from the next contexts
    and the store reshuffled (SAELens's mixing buffer), so consecutive batches mix many contexts.
    Contexts cycle over the corpus; each starts with BOS, whose activation is never used."""

    def __init__(self, model: Any, site: Site | str, texts: Sequence[str], *, context: int = 64,
                 capacity: int = 65_536, contexts_per_trace: int = 32, seed: int = 0) -> None:
        self.model = model
        self.site = Site.parse(site) if isinstance(site, str) else site
        self.contexts = token_contexts(model.tokenizer, texts, context)
        if not len(self.contexts):
            raise ValueError("the corpus yields no context of the requested length")
        self.per_trace = contexts_per_trace
        self.rng = np.random.default_rng(seed)
        self._next_context = 0
        self.capacity = capacity
        self.store: np.ndarray | None = None
        self._served = 0
        self.activations_traced = 0

    def _contexts(self) -> np.ndarray:
        n = len(self.contexts)
        idx = (self._next_context + np.arange(self.per_trace)) % n
        self._next_context = int((self._next_context + self.per_trace) % n)
        return self.contexts[idx]

    def _trace(self, n: int) -> np.ndarray:
        parts, have = [], 0
        while have < n:
            ids = mx.array(self._contexts())
            with self.model.trace(ids):
                h = self.site.read(self.model).save()
            acts = np.array(h[:, 1:].astype(mx.float32)).reshape(-1, h.shape[-1])  # drop BOS
            parts.append(acts)
            have += len(acts)
        self.activations_traced += have
        return np.concatenate(parts)[:n]

    def next_batch(self, batch_size: int) -> mx.array:
        """``batch_size`` shuffled activations, ``[batch_size, d]`` float32."""
        if self.store is None:
            self.store = self._trace(self.capacity)
            self.rng.shuffle(self.store)
        elif self._served + batch_size > self.capacity // 2:
            half = self.capacity // 2
            self.store[:half] = self._trace(half)
            self.rng.shuffle(self.store)
            self._served = 0
        batch = self.store[self._served:self._served + batch_size]
        self._served += batch_size
        return mx.array(batch)

    def __iter__(self) -> Iterator[mx.array]:
        while True:
            yield self.next_batch(1024)


def token_contexts(tokenizer: Any, texts: Sequence[str], context: int) -> np.ndarray:
    """``[n, context]`` token ids: each text's tokens cut into windows of ``context - 1`` after a BOS."""
    bos = tokenizer.bos_token_id
    rows = []
    for text in texts:
        ids = [i for i in tokenizer(text)["input_ids"] if i != bos]
        for start in range(0, len(ids) - (context - 1) + 1, context - 1):
            rows.append([bos] + ids[start:start + context - 1])
    return np.asarray(rows, dtype=np.int32).reshape(-1, context)


# --- the straight-through estimators of JumpReLU training ------------------------------------------

def _rectangle(x: mx.array) -> mx.array:
    return ((x > -0.5) & (x < 0.5)).astype(x.dtype)


def _jumprelu(bandwidth: float) -> Callable[[mx.array, mx.array], mx.array]:
    """``x * (x > threshold)``; the threshold's gradient through the rectangle kernel (DeepMind)."""

    @mx.custom_function
    def fn(x, threshold):
        return x * (x > threshold).astype(x.dtype)

    @fn.vjp
    def fn_vjp(primals, cotangent, output):
        x, threshold = primals
        ste = (threshold / bandwidth) * _rectangle((x - threshold) / bandwidth) * cotangent
        return (x > threshold).astype(x.dtype) * cotangent, -ste.reshape(-1, ste.shape[-1]).sum(0)

    return fn


def _step(bandwidth: float) -> Callable[[mx.array, mx.array], mx.array]:
    """The Heaviside step ``x > threshold``; the threshold's gradient through the rectangle kernel."""

    @mx.custom_function
    def fn(x, threshold):
        return (x > threshold).astype(x.dtype)

    @fn.vjp
    def fn_vjp(primals, cotangent, output):
        x, threshold = primals
        ste = (1.0 / bandwidth) * _rectangle((x - threshold) / bandwidth) * cotangent
        return mx.zeros_like(x), -ste.reshape(-1, ste.shape[-1]).sum(0)

    return fn


# --- losses ---------------------------------------------------------------------------------------

def _topk_mask(pre: mx.array, k: int) -> mx.array:
    """1 on each row's k largest entries (ties at the k-th value all kept), else 0; no gradient."""
    pre = mx.stop_gradient(pre)
    kth = mx.topk(pre, k, axis=-1).min(axis=-1, keepdims=True)
    return (pre >= kth).astype(pre.dtype)


def _auxk(params: dict, pre: mx.array, residual: mx.array, dead: mx.array, d_in: int) -> mx.array:
    """AuxK (Gao et al.; SAELens's form): the top ``d_in // 2`` dead latents, by pre-activation,
    decode the (detached) residual; scaled down when fewer latents are dead."""
    k_aux = max(1, min(d_in // 2, pre.shape[-1]))
    masked = mx.where(dead > 0, pre, -mx.inf)
    chosen = _topk_mask(masked, k_aux) * dead  # fewer dead than k_aux: the extra picks are live, drop them
    acts = mx.where(chosen > 0, pre, 0.0)
    recon = acts @ params["W_dec"]
    n_dead = dead.sum()
    scale = mx.minimum(n_dead / k_aux, 1.0)
    loss = ((recon - mx.stop_gradient(residual)) ** 2).sum(-1).mean()
    return mx.where(n_dead > 0, scale * loss, 0.0)


def loss_terms(config: TrainConfig, params: dict, x: mx.array, dead: mx.array | None) -> tuple[mx.array, dict]:
    """The training loss on a batch ``x [B, d_in]`` and its parts (``mse``, the sparsity or aux
    term), plus the feature activations under ``"acts"``. ``dead`` is a 0/1 mask over latents
    (``None``: none are dead, so TopK's AuxK term is zero and not computed)."""
    sae_in = x - params["b_dec"]
    pre = sae_in @ params["W_enc"] + params["b_enc"]
    arch = config.architecture
    if arch == "topk":
        acts = mx.maximum(pre, 0) * mx.stop_gradient(_topk_mask(pre, config.k))
    elif arch == "batchtopk":
        relu = mx.maximum(pre, 0)
        flat = relu.reshape(-1)
        kth = mx.stop_gradient(mx.topk(flat, config.k * x.shape[0]).min())
        acts = relu * mx.stop_gradient((relu >= kth) & (relu > 0)).astype(relu.dtype)
    elif arch == "relu":
        acts = mx.maximum(pre, 0)
    else:
        acts = _jumprelu(config.jumprelu_bandwidth)(pre, params["threshold"])
    recon = acts @ params["W_dec"] + params["b_dec"]
    mse = ((recon - x) ** 2).sum(-1).mean()
    parts = {"mse": mse, "acts": acts, "recon": recon}
    if arch in ("topk", "batchtopk"):
        parts["aux"] = (mx.array(0.0, dtype=mse.dtype) if dead is None else
                        config.aux_coefficient * _auxk(params, pre, x - recon, dead, x.shape[-1]))
    elif arch == "relu":
        norms = mx.linalg.norm(params["W_dec"], axis=-1)
        parts["aux"] = config.l1_coefficient * (acts * norms).sum(-1).mean()
    else:
        l0 = _step(config.jumprelu_bandwidth)(pre, params["threshold"]).sum(-1)
        parts["aux"] = config.l0_coefficient * l0.mean()
    return mse + parts["aux"], parts


def init_params(config: TrainConfig, d_in: int, seed: int | None = None) -> dict[str, mx.array]:
    """SAELens-style initialisation: random decoder rows (unit norm for TopK variants, 0.1 for
    L1/L0-penalised ones), encoder = decoder transposed, zero biases."""
    key = mx.random.key(config.seed if seed is None else seed)
    w = mx.random.normal((config.d_sae, d_in), key=key)
    norm = 1.0 if config.architecture in ("topk", "batchtopk") else 0.1
    w = w / mx.linalg.norm(w, axis=-1, keepdims=True) * norm
    params = {"W_enc": mx.array(w.T), "b_enc": mx.zeros((config.d_sae,)), "W_dec": w, "b_dec": mx.zeros((d_in,))}
    if config.architecture == "jumprelu":
        params["threshold"] = mx.full((config.d_sae,), config.jumprelu_init_threshold)
    return params


# --- the trainer ----------------------------------------------------------------------------------

@dataclass
class TrainLog:
    """Metrics logged during training, one dict per logging step (``step``, ``activations``,
    ``loss``, ``mse``, ``fvu``, ``l0``, ``dead_fraction``, ``acts_per_s``, and when evaluated
    ``ce_clean``, ``ce_spliced``, ``ce_zero``, ``ce_recovered``)."""

    rows: list[dict] = field(default_factory=list)

    def last(self, key: str) -> Any:
        for row in reversed(self.rows):
            if key in row:
                return row[key]
        return None


class Trainer:
    """Trains one SAE on batches of activations with a compiled step (Adam, gradient clipping,
    decoder-norm constraint, dead-latent tracking and handling)."""

    def __init__(self, config: TrainConfig, d_in: int, *, scale: float = 1.0, site: Site | None = None) -> None:
        self.config = config
        self.d_in = d_in
        self.scale = scale
        self.site = site
        self.params = init_params(config, d_in)
        self.optimizer = optim.Adam(learning_rate=config.lr)
        self.optimizer.init(self.params)
        self.since_fired = mx.zeros((config.d_sae,))
        self.threshold = mx.array(0.0)  # batchtopk's running inference threshold
        self.steps = 0
        self.activations = 0
        self._state = [self.params, self.optimizer.state, self.since_fired, self.threshold]
        # Two compiled variants: AuxK's extra top-k and decode only run while some latent is dead.
        self._compiled = mx.compile(lambda x: self._step(x, True), inputs=self._state, outputs=self._state)
        self._compiled_no_aux = mx.compile(lambda x: self._step(x, False), inputs=self._state, outputs=self._state)

    def _step(self, x: mx.array, aux: bool = True) -> tuple[mx.array, ...]:
        params, opt_state, since_fired, threshold = self._state
        config = self.config
        dead = (since_fired >= config.dead_after).astype(x.dtype) if aux else None

        def loss_fn(p):
            loss, parts = loss_terms(config, p, x, dead)
            return loss, parts["mse"], parts["acts"], parts["recon"]

        (loss, mse, acts, recon), grads = mx.value_and_grad(loss_fn)(params)
        if config.grad_clip:
            grads, _ = optim.clip_grad_norm(grads, config.grad_clip)
        new = self.optimizer.apply_gradients(grads, params)
        if config.architecture in ("topk", "batchtopk"):
            new["W_dec"] = new["W_dec"] / mx.linalg.norm(new["W_dec"], axis=-1, keepdims=True)
        if config.architecture == "jumprelu":
            new["threshold"] = mx.maximum(new["threshold"], 0.0)
        params.update(new)
        fired = (acts > 0).any(axis=0)
        self._state[2] = mx.where(fired, 0.0, since_fired + x.shape[0])
        if config.architecture == "batchtopk":
            positive = mx.where(acts > 0, acts, mx.inf).min()
            lr = config.batchtopk_threshold_lr
            self._state[3] = mx.where(mx.isfinite(positive), (1 - lr) * threshold + lr * positive, threshold)
        l0 = (acts > 0).sum(-1).astype(mx.float32).mean()
        fvu = ((recon - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
        return loss, mse, l0, fvu

    def step(self, x: mx.array) -> tuple[mx.array, ...]:
        """One optimisation step on ``x [B, d_in]`` (already scaled); returns loss, mse, L0, FVU."""
        needs_aux = self.config.architecture not in ("topk", "batchtopk") or bool(
            (self._state[2] >= self.config.dead_after).any())
        out = (self._compiled if needs_aux else self._compiled_no_aux)(x)
        self.since_fired, self.threshold = self._state[2], self._state[3]
        self.steps += 1
        self.activations += x.shape[0]
        if (self.config.architecture in ("relu", "jumprelu") and self.config.resample_every
                and self.steps % self.config.resample_every == 0):
            self.resample(x)
        return out

    @property
    def dead_fraction(self) -> float:
        return float((self._state[2] >= self.config.dead_after).astype(mx.float32).mean())

    def resample(self, x: mx.array) -> int:
        """Re-initialise dead latents towards inputs the SAE reconstructs worst (Anthropic's
        resampling, simplified): decoder row = that input's residual direction, encoder column the
        same direction at 0.2x the mean live encoder norm, bias zero, Adam moments reset."""
        params = self._state[0]
        dead = np.array(self._state[2] >= self.config.dead_after)
        n = int(dead.sum())
        if n == 0:
            return 0
        _, parts = loss_terms(self.config, params, x, mx.zeros((self.config.d_sae,)))
        err = np.array(((parts["recon"] - x) ** 2).sum(-1))
        prob = err / err.sum() if err.sum() > 0 else None
        rng = np.random.default_rng(self.steps)
        rows = rng.choice(len(err), size=n, p=prob)
        resid = np.array(x - params["b_dec"])[rows]
        resid /= np.linalg.norm(resid, axis=-1, keepdims=True) + 1e-8
        ids = np.nonzero(dead)[0]
        enc_norm = np.linalg.norm(np.array(params["W_enc"]), axis=0)
        alive_norm = float(enc_norm[~dead].mean()) if (~dead).any() else 1.0
        dec_norm = float(np.linalg.norm(np.array(params["W_dec"]), axis=-1)[~dead].mean()) if (~dead).any() else 0.1
        W_dec, W_enc, b_enc = (np.array(params[n_]) for n_ in ("W_dec", "W_enc", "b_enc"))
        W_dec[ids] = resid * dec_norm
        W_enc[:, ids] = resid.T * 0.2 * alive_norm
        b_enc[ids] = 0.0
        params.update(W_dec=mx.array(W_dec), W_enc=mx.array(W_enc), b_enc=mx.array(b_enc))
        for name, axis in (("W_dec", 0), ("W_enc", 1), ("b_enc", 0)):
            for moment in ("m", "v"):
                arr = np.array(self._state[1][name][moment])
                if axis == 0:
                    arr[ids] = 0.0
                else:
                    arr[:, ids] = 0.0
                self._state[1][name][moment] = mx.array(arr)
        self._state[2] = mx.where(mx.array(dead), 0.0, self._state[2])
        self.since_fired = self._state[2]
        return n

    def sae(self) -> SAE:
        """The SAE as trained, in input units (the scale folded in), in SAELens's parametrisation."""
        p = {name: mx.array(v) for name, v in self._state[0].items()}
        s = self.scale
        folded = {"W_enc": p["W_enc"] * s, "b_enc": p["b_enc"], "W_dec": p["W_dec"] / s, "b_dec": p["b_dec"] / s}
        arch, k = self.config.architecture, None
        if arch == "topk":
            out_arch, k = "topk", self.config.k
        elif arch == "batchtopk":
            out_arch = "jumprelu"
            folded["threshold"] = mx.full((self.config.d_sae,), float(self._state[3]))
        elif arch == "relu":
            out_arch = "standard"
        else:
            out_arch = "jumprelu"
            folded["threshold"] = p["threshold"]
        metadata = {"trained_by": "mlxsight", "training_architecture": arch, "activation_scale": s,
                    "steps": self.steps, "training_activations": self.activations}
        if self.site is not None:
            metadata["hook_name"] = self.site.hook_name
        return SAE(out_arch, folded, site=self.site, k=k, apply_b_dec_to_input=True, metadata=metadata,
                   source="mlxsight")


# --- evaluation with the model --------------------------------------------------------------------

def ce_losses(model: Any, sae: SAE, ids: np.ndarray) -> dict[str, float]:
    """Next-token cross-entropy on ``ids [B, T]``: plain, with the site replaced by the SAE's
    reconstruction (no error term), and zero-ablated; ``ce_recovered`` is
    ``(zero - spliced) / (zero - clean)``."""
    site = sae.site
    batch = mx.array(ids)
    with model.trace(batch):
        clean = _logits(model).save()
    with model.trace(batch):
        site.write(model, sae.forward(site.read(model)))
        spliced = _logits(model).save()
    with model.trace(batch):
        h = site.read(model)
        site.write(model, h * 0)
        zero = _logits(model).save()
    out = {name: _ce(logits, batch) for name, logits in (("ce_clean", clean), ("ce_spliced", spliced),
                                                          ("ce_zero", zero))}
    gap = out["ce_zero"] - out["ce_clean"]
    out["ce_recovered"] = (out["ce_zero"] - out["ce_spliced"]) / gap if gap > 0 else float("nan")
    return out


def reconstruction_metrics(sae: SAE, acts: mx.array) -> dict[str, float]:
    """FVU, L0 and the fraction of latents that never fire on ``acts [N, d_in]`` (input units)."""
    f = sae.encode(acts)
    recon = sae.decode(f)
    fvu = float(((recon - acts) ** 2).sum() / ((acts - acts.mean(0)) ** 2).sum())
    fired = (f > 0)
    return {"fvu": fvu, "l0": float(fired.sum(-1).astype(mx.float32).mean()),
            "dead_fraction": float(1 - fired.any(0).astype(mx.float32).mean())}


def _logits(model: Any) -> Any:
    return model.output if getattr(model, "view", "hf") == "mlx" else model.output.logits


def _ce(logits: mx.array, ids: mx.array) -> float:
    logp = logits[:, :-1] - mx.logsumexp(logits[:, :-1], axis=-1, keepdims=True)
    picked = mx.take_along_axis(logp, ids[:, 1:, None], axis=-1)
    return float(-picked.mean())


# --- the whole run --------------------------------------------------------------------------------

def train_sae(model: Any, site: Site | str, texts: Sequence[str], config: TrainConfig | None = None, *,
              eval_texts: Sequence[str] | None = None, context: int = 64, buffer_capacity: int = 65_536,
              log_every: int = 100, eval_every: int = 0, progress: bool = True,
              on_log: Callable[[dict], None] | None = None) -> tuple[SAE, TrainLog]:
    """Train an SAE on ``model``'s activations at ``site`` over ``texts``; return it (in SAELens's
    parametrisation, ready to ``save``) and the metrics logged every ``log_every`` steps (CE-loss
    recovery on ``eval_texts`` every ``eval_every`` steps and at the end, when given)."""
    config = config or TrainConfig()
    site = Site.parse(site) if isinstance(site, str) else site
    buffer = ActivationBuffer(model, site, texts, context=context, capacity=buffer_capacity, seed=config.seed)
    first = buffer.next_batch(config.batch_size)
    d_in = first.shape[-1]
    scale = math.sqrt(d_in) / float(np.linalg.norm(buffer.store, axis=-1).mean())
    trainer = Trainer(config, d_in, scale=scale, site=site)
    eval_ids = token_contexts(model.tokenizer, eval_texts, context)[:32] if eval_texts else None
    log = TrainLog()
    bar = _bar(config.steps, progress)
    start, batch = time.perf_counter(), first
    for step in range(1, config.steps + 1):
        loss, mse, l0, fvu = trainer.step(batch * scale)
        if step % log_every == 0 or step == config.steps:
            mx.eval(loss)
            row = {"step": step, "activations": trainer.activations, "loss": float(loss), "mse": float(mse),
                   "fvu": float(fvu), "l0": float(l0), "dead_fraction": trainer.dead_fraction,
                   "acts_per_s": trainer.activations / (time.perf_counter() - start)}
            if eval_ids is not None and ((eval_every and step % eval_every == 0) or step == config.steps):
                row.update(ce_losses(model, trainer.sae(), eval_ids))
            log.rows.append(row)
            if on_log:
                on_log(row)
            if bar is not None:
                bar.set_postfix(fvu=f"{row['fvu']:.3f}", l0=f"{row['l0']:.1f}", dead=f"{row['dead_fraction']:.2f}")
        if bar is not None:
            bar.update(1)
        batch = buffer.next_batch(config.batch_size)
    if bar is not None:
        bar.close()
    sae = trainer.sae()
    sae.metadata["train_config"] = asdict(config)
    return sae, log


def _bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="training SAE")


def evaluate(model: Any, sae: SAE, texts: Sequence[str], *, context: int = 64, n_contexts: int = 64) -> dict[str, float]:
    """Held-out figures for ``sae`` on ``texts``: FVU, L0, dead fraction and CE-loss recovery."""
    ids = token_contexts(model.tokenizer, texts, context)[:n_contexts]
    with model.trace(mx.array(ids)):
        h = sae.site.read(model).save()
    out = reconstruction_metrics(sae, h[:, 1:].reshape(-1, h.shape[-1]))
    out.update(ce_losses(model, sae, ids[:32]))
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m mlxsight.tools.sae_train``: train an SAE on the bundled stories260K, print held-out
    figures next to a random TopK SAE at the same L0, and save it in SAELens's format."""
    import argparse
    import json

    from .. import assets
    from ..model import LanguageModel
    from .corpus import sample_corpus

    parser = argparse.ArgumentParser(prog="python -m mlxsight.tools.sae_train", description=main.__doc__)
    parser.add_argument("--architecture", default="topk", choices=ARCHITECTURES)
    parser.add_argument("--site", default="blocks.2.hook_resid_post")
    parser.add_argument("--d-sae", type=int, default=512)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--out", default=None, help="directory to save the SAE in (SAELens format)")
    args = parser.parse_args(argv)

    model = LanguageModel(assets.path("stories260k"))
    texts = sample_corpus(model, args.texts, max_tokens=128)
    split = int(len(texts) * 0.9)
    config = TrainConfig(architecture=args.architecture, d_sae=args.d_sae, k=args.k, steps=args.steps,
                         batch_size=args.batch_size, lr=args.lr)
    start = time.perf_counter()
    sae, log = train_sae(model, args.site, texts[:split], config, eval_texts=texts[split:],
                         log_every=max(1, args.steps // 10), eval_every=max(1, args.steps // 5))
    seconds = time.perf_counter() - start
    held = evaluate(model, sae, texts[split:])
    baseline = Trainer(TrainConfig(architecture="topk", d_sae=args.d_sae, k=max(1, round(held["l0"])), seed=7),
                       sae.d_in, site=sae.site).sae()
    rand = evaluate(model, baseline, texts[split:])
    summary = {"architecture": args.architecture, "steps": args.steps, "activations": log.rows[-1]["activations"],
               "seconds": round(seconds, 1), "trained": held, "random_topk_same_l0": rand}
    print(json.dumps(summary, indent=2))
    if args.out:
        sae.save(args.out, model_name="stories260k")
        print(f"saved to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
