"""Steering: add a direction to the residual stream while the model runs or generates.

- ``steering_vector(model, positive, negative, layer)``: the contrastive mean difference of the
  residual stream after decoder layer ``layer`` between prompts with and without a property, over
  several pairs (a ``SteeringVector``).
- ``generate_steered(model, prompt, vector, scales=...)``: greedy generation with ``scale * vector``
  added to the output of the chosen layers at the chosen positions, all scales as rows of one
  batched generation (a ``SteeringResult``: the text per scale).
- ``scale_search(model, prompt, vector, metric, target)``: the smallest scale at which a metric of
  the steered next-token logits reaches a target, by bisection.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from . import backend
from .metrics import bind, metric_name
from .patching import token_ids
from .result import Result
from .standardize import Standardized, standardize

POSITIONS = ("mean", "last")


@dataclass(repr=False)
class SteeringVector(Result):
    """A direction in the residual stream after decoder layer ``layer``.

    Fields:
        vector: ``[d_model]`` float32, ``mean(positive) - mean(negative)``.
        layer: the decoder layer whose output it was read from (and is meant to be added to).
        position: ``"mean"`` (each prompt's mean over its tokens), ``"last"`` (each prompt's last
            token) or a token index.
        n_pairs: how many positive and negative prompts were averaged.
    """

    vector: np.ndarray
    layer: int
    position: str | int
    n_pairs: int

    @property
    def norm(self) -> float:
        return float(np.linalg.norm(self.vector))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.vector if dtype is None else self.vector.astype(dtype)


@dataclass(repr=False)
class SteeringResult(Result):
    """Greedy generations of one prompt, steered by ``scale * vector`` for each scale.

    Fields:
        prompt: the prompt text (its tokens decoded when token ids were given).
        scales: the scale of each generation (``0`` is the unsteered model).
        texts: the prompt and its continuation per scale, special tokens removed.
        completions: the continuation alone per scale.
        token_ids: the generated token ids per scale (up to and including an end-of-sequence token).
        layers: the decoder layers the vector was added to (their outputs).
        positions: ``"all"`` (every prompt and generated token), ``"last"`` (the prompt's last token
            and every generated one) or the prompt positions steered (generated tokens unsteered).
        vector_norm: the norm of the unscaled vector.
    """

    prompt: str
    scales: list[float]
    texts: list[str]
    completions: list[str]
    token_ids: list[list[int]]
    layers: list[int]
    positions: str | list[int]
    vector_norm: float

    @property
    def layer(self) -> int:
        """The (first) steered layer."""
        return self.layers[0]

    def __getitem__(self, scale: float) -> str:
        """The text generated at ``scale``."""
        return self.texts[self.scales.index(scale)]


@dataclass(repr=False)
class ScaleSearch(Result):
    """The outcome of ``scale_search``.

    Fields:
        scale: the smallest scale found whose metric reaches ``target`` (within ``tol``), or
            ``None`` if even ``high`` does not.
        value: the metric at ``scale``.
        target: the target value; ``increasing`` whether the metric was required to rise to it.
        evaluations: every ``(scale, metric)`` pair evaluated, in order.
        metric: the metric's name.
    """

    scale: float | None
    value: float | None
    target: float
    increasing: bool
    evaluations: list[tuple[float, float]] = field(default_factory=list)
    metric: str = ""


def steering_vector(model: Any, positive: str | Sequence[Any], negative: str | Sequence[Any], layer: int,
                    position: str | int = "mean") -> SteeringVector:
    """The mean residual after decoder layer ``layer`` over ``positive`` prompts minus over ``negative``.

    Prompts are strings or token ids; ``positive`` and ``negative`` are one prompt each or lists of
    the same length (pairs, e.g. "She was happy." / "She was sad."). ``position`` picks what each
    prompt contributes: ``"mean"`` (default) averages over its tokens, which uses the whole
    contrast and lets paired prompts differ in length; ``"last"`` takes the last token, where the
    next-token prediction forms; an int takes that token. Each prompt runs in its own trace (no
    padding enters the average).
    """
    std = standardize(model)
    positive = [positive] if isinstance(positive, str) else list(positive)
    negative = [negative] if isinstance(negative, str) else list(negative)
    if len(positive) != len(negative) or not positive:
        raise ValueError(f"need as many positive as negative prompts (pairs), got {len(positive)} and {len(negative)}")
    if not (position in POSITIONS or isinstance(position, int)):
        raise ValueError(f"position must be one of {POSITIONS} or a token index, got {position!r}")
    layer = _layer(std, layer)

    def mean_of(prompts: list) -> np.ndarray:
        rows = []
        for prompt in prompts:
            h = backend.run(model, [token_ids(model, prompt)], lambda m: backend.first(std.layers[layer].output))
            h = backend.to_numpy(h, np.float64)[0]
            rows.append(h.mean(0) if position == "mean" else h[-1 if position == "last" else position])
        return np.mean(rows, axis=0)

    vector = (mean_of(positive) - mean_of(negative)).astype(np.float32)
    return SteeringVector(vector=vector, layer=layer, position=position, n_pairs=len(positive))


def generate_steered(model: Any, prompt: Any, vector: Any, scales: Sequence[float] = (0.0, 1.0, 2.0, 4.0),
                     layer: int | Sequence[int] | None = None, positions: str | Sequence[int] = "all",
                     max_new_tokens: int = 40) -> SteeringResult:
    """Greedy generation with ``scale * vector`` added to decoder layer outputs, one row per scale.

    ``vector`` is a ``SteeringVector`` (its layer is the default) or an array ``[d_model]``.
    ``layer`` is one layer or several (the vector is added after each). ``positions``: ``"all"``
    (every prompt token and every generated token), ``"last"`` (the prompt's last token and every
    generated one) or a list of prompt positions (generated tokens unsteered). All scales run as
    rows of one batched generation; each text stops at its first end-of-sequence token.
    """
    std = standardize(model)
    layers = _steer_layers(std, vector, layer)
    ids = token_ids(model, prompt)
    scales = [float(s) for s in scales]
    n, t = len(scales), len(ids)
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    if v.shape[0] != std.d_model:
        raise ValueError(f"the vector has {v.shape[0]} dimensions, the model's residual stream {std.d_model}")
    steer_prompt, steer_new = _position_masks(positions, t)
    coef = np.asarray(scales, np.float32)[:, None, None] * v[None, None, :]
    add_prompt = backend.from_numpy(model, coef * steer_prompt[None, :, None])  # [n, T, D]
    add_step = backend.from_numpy(model, coef) if steer_new else None  # [n, 1, D]
    eos = set(_eos_ids(model))

    with warnings.catch_warnings():
        # a generation every row of which ends early leaves the later steps unreached: that is expected
        warnings.filterwarnings("ignore", message=".*never reached.*")
        new = _steered_tokens(std, [ids] * n, layers, add_prompt, add_step, max_new_tokens)

    token_rows, texts, completions = [], [], []
    for row in new:
        kept = []
        for tok in row:
            kept.append(tok)
            if tok in eos:
                break
        token_rows.append(kept)
        completions.append(_decode(model, kept))
        texts.append(_decode(model, ids + kept))
    text = prompt if isinstance(prompt, str) else _decode(model, ids)
    return SteeringResult(prompt=text, scales=scales, texts=texts, completions=completions, token_ids=token_rows,
                          layers=layers, positions=positions if isinstance(positions, str) else list(positions),
                          vector_norm=float(np.linalg.norm(v)))


def steer(model: Any, prompt: Any, vector: Any, scale: float = 1.0, **kwargs: Any) -> str:
    """The text ``generate_steered`` gives at one ``scale``."""
    return generate_steered(model, prompt, vector, scales=[scale], **kwargs).texts[0]


def scale_search(model: Any, prompt: Any, vector: Any, metric: Callable[[Any], Any], target: float,
                 layer: int | Sequence[int] | None = None, positions: str | Sequence[int] = "all",
                 low: float = 0.0, high: float = 16.0, tol: float = 0.05, max_steps: int = 30) -> ScaleSearch:
    """The smallest scale in ``[low, high]`` whose steered ``metric`` reaches ``target``, by bisection.

    ``metric`` maps the last position's steered logits (``[rows, vocab]``) to a value per row, as
    for patching (e.g. ``probability(id)``, ``logit_diff(good, bad)``, or ``kl_div()``, which
    compares with the unsteered run: a divergence budget); it is assumed monotonic in
    the scale over the interval. If the metric at ``low`` is above ``target`` it must fall to it
    (``increasing=False``), otherwise rise. Each step is one forward pass of the prompt; the
    search stops when the bracket is narrower than ``tol``.
    """
    std = standardize(model)
    layers = _steer_layers(std, vector, layer)
    ids = token_ids(model, prompt)
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    mask, _ = _position_masks(positions, len(ids))
    evaluations: list[tuple[float, float]] = []
    bound: list[Any] = [None]

    def value(scale: float) -> float:
        add = backend.from_numpy(model, (scale * v)[None, None, :] * mask[None, :, None])

        def read(m: Any) -> Any:
            for layer_index in layers:
                out = std.layers[layer_index].output
                std.layers[layer_index].output = out + add
            return backend.first(std.layers[-1].output)[:, -1]

        last = backend.run(model, [ids], read)
        with backend.no_grad(model):
            logits = std.logits(last)
            if bound[0] is None:
                bound[0] = bind(metric, logits)  # kl_div compares with the unsteered run
            out = float(backend.to_numpy(bound[0](logits), np.float64).reshape(-1)[0])
        evaluations.append((scale, out))
        return out

    name = metric_name(metric)
    if hasattr(metric, "bind"):
        value(0.0)  # the unsteered run, which the metric compares with
    at_low, at_high = value(low), value(high)
    increasing = at_low < target
    reached = (lambda x: x >= target) if increasing else (lambda x: x <= target)
    if reached(at_low):
        return ScaleSearch(low, at_low, target, increasing, evaluations, name)
    if not reached(at_high):
        return ScaleSearch(None, None, target, increasing, evaluations, name)
    lo, hi, hi_value = low, high, at_high
    for _ in range(max_steps):
        if hi - lo <= tol:
            break
        mid = (lo + hi) / 2
        mid_value = value(mid)
        if reached(mid_value):
            hi, hi_value = mid, mid_value
        else:
            lo = mid
    return ScaleSearch(hi, hi_value, target, increasing, evaluations, name)


# -- helpers ----------------------------------------------------------------------------------------

def _layer(std: Standardized, layer: int) -> int:
    index = layer + std.n_layers if layer < 0 else layer
    if not 0 <= index < std.n_layers:
        raise IndexError(f"layer {layer} out of range: the model has {std.n_layers}")
    return index


def _steer_layers(std: Standardized, vector: Any, layer: int | Sequence[int] | None) -> list[int]:
    if layer is None:
        if not isinstance(vector, SteeringVector):
            raise ValueError("pass layer=... (the vector is a plain array, which does not say where it belongs)")
        layer = vector.layer
    layers = [layer] if isinstance(layer, int) else list(layer)
    return sorted(_layer(std, int(i)) for i in layers)


def _position_masks(positions: str | Sequence[int], n_tokens: int) -> tuple[np.ndarray, bool]:
    """Which prompt positions are steered (a 0/1 mask), and whether generated tokens are."""
    mask = np.zeros(n_tokens, np.float32)
    if positions == "all":
        mask[:] = 1
        return mask, True
    if positions == "last":
        mask[-1] = 1
        return mask, True
    if isinstance(positions, str):
        raise ValueError(f"positions must be 'all', 'last' or a list of prompt positions, got {positions!r}")
    for p in positions:
        mask[int(p)] = 1
    return mask, False


def _steered_tokens(std: Standardized, rows: list[list[int]], layers: list[int], add_prompt: Any, add_step: Any,
                    max_new_tokens: int) -> list[list[int]]:
    """Greedy generation, steered; the next token of every row at every step (argmax of its logits)."""
    model = std.model
    logits_envoy = std.unembedding  # lm_head: its output at each step is that step's logits
    with backend.no_grad(model):
        with model.generate(rows, max_new_tokens=max_new_tokens, do_sample=False) as tracer:
            chosen = backend.save(model, [])
            for step in tracer.iter[:max_new_tokens]:
                add = add_prompt if step == 0 else add_step
                for layer in layers:
                    if add is not None:
                        out = std.layers[layer].output
                        std.layers[layer].output = out + add
                logits = logits_envoy.output if logits_envoy is not None else model.output
                chosen.append(logits[:, -1].argmax(-1))
    steps = [backend.to_numpy(c).reshape(-1) for c in chosen]
    return [[int(s[r]) for s in steps] for r in range(len(rows))]


def _eos_ids(model: Any) -> list[int]:
    eos = getattr(getattr(model, "config", None), "eos_token_id", None)
    if eos is None:
        eos = getattr(model.tokenizer, "eos_token_id", None)
    if eos is None:
        return []
    return [int(eos)] if isinstance(eos, int) else [int(e) for e in eos]


def _decode(model: Any, ids: list[int]) -> str:
    return model.tokenizer.decode(ids, skip_special_tokens=True)
