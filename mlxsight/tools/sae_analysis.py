"""Using an SAE on a model: splice, ablate, clamp, steer, feature activations, top contexts, attribution.

``splice``/``ablate``/``clamp``/``steer`` are called *inside* a trace (or a ``generate`` step loop) on
either backend: an mlxsight model, or an nnsight ``LanguageModel`` holding the same checkpoint. The
other three open their own traces and return result dataclasses of numpy arrays.

Splicing replaces the activation ``h`` at the SAE's site by ``decode(edit(encode(h))) + error`` with
``error = h - decode(encode(h))``: with no edit the forward is unchanged (to float rounding), and an
edit changes it by exactly the decoded change of the features.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from . import backend
from .result import Result
from .sae import SAE, Site

Edit = Callable[[Any], Any]


# --- inside a trace -------------------------------------------------------------------------------

def splice(model: Any, sae: SAE, edit: Edit | None = None, *, site: Site | str | None = None) -> Any:
    """Inside a trace: run the activation at the SAE's site through the SAE, keeping the error
    term. ``edit(features) -> features`` changes the features on the way (called on the backend's
    arrays: ``mx.array`` or ``torch.Tensor``, shape ``[..., d_sae]``). Returns the *unedited*
    feature activations (a proxy/tensor: ``.save()`` it to keep it)."""
    site = _site(sae, site)
    h = site.read(model)
    features = sae.encode(h)
    site.write(model, sae.splice(h, edit))
    return features


def ablate(model: Any, sae: SAE, features: int | Sequence[int], *, site: Site | str | None = None) -> Any:
    """Inside a trace: splice with the given features set to zero."""
    ids = np.atleast_1d(np.asarray(features, dtype=np.int64))
    return splice(model, sae, feature_edit(sae.d_sae, set_to={int(i): 0.0 for i in ids}), site=site)


def clamp(model: Any, sae: SAE, values: dict[int, float], *, site: Site | str | None = None) -> Any:
    """Inside a trace: splice with each feature in ``values`` held at its value on every position."""
    return splice(model, sae, feature_edit(sae.d_sae, set_to=values), site=site)


def steer(model: Any, sae: SAE, coefficients: dict[int, float], *, site: Site | str | None = None) -> None:
    """Inside a trace (or each step of ``generate``): add ``sum(c * decoder_direction(i))`` to the
    activation at the SAE's site, on every position."""
    site = _site(sae, site)
    vector = sum(float(c) * np.array(sae.decoder_direction(int(i)), dtype=np.float32)
                 for i, c in coefficients.items())
    h = site.read(model)
    site.write(model, h + _like(vector, h))


def feature_edit(d_sae: int, *, set_to: dict[int, float] | None = None,
                 scale: dict[int, float] | None = None) -> Edit:
    """An edit for ``splice``: features in ``scale`` multiplied, features in ``set_to`` replaced."""
    keep = np.ones(d_sae, np.float32)
    add = np.zeros(d_sae, np.float32)
    for i, s in (scale or {}).items():
        keep[i] = s
    for i, v in (set_to or {}).items():
        keep[i], add[i] = 0.0, v

    def edit(f: Any) -> Any:
        return f * _like(keep, f) + _like(add, f)

    return edit


def _site(sae: SAE, site: Site | str | None) -> Site:
    if isinstance(site, str):
        return Site.parse(site)
    site = site or sae.site
    if site is None:
        raise ValueError("this SAE carries no site: pass site= (a hook name or module path) or load it with hook=")
    return site


def _like(values: np.ndarray, like: Any) -> Any:
    """``values`` as the backend array ``like`` is (a proxy's values become mx.arrays)."""
    if backend.is_torch(like):
        import torch

        return torch.from_numpy(values).to(device=like.device, dtype=like.dtype)
    import mlx.core as mx

    arr = mx.array(values)
    return arr if backend.is_proxy(like) else arr.astype(like.dtype)


# --- whole analyses -------------------------------------------------------------------------------

@dataclass(repr=False)
class FeatureActivations(Result):
    """Activations of selected SAE features over one prompt: ``acts[t, j]`` is feature
    ``feature_ids[j]`` at token ``t`` (``tokens[t]``)."""

    acts: np.ndarray
    feature_ids: np.ndarray
    tokens: list[str]
    prompt: str = ""


@dataclass(repr=False)
class TopContexts(Result):
    """The ``k`` highest activations of each feature over a corpus. For feature ``feature_ids[j]``,
    ``values[j, r]`` is its r-th highest activation, at token ``positions[j, r]`` of corpus text
    ``text_ids[j, r]``; ``windows[j][r]`` the tokens around it and ``window_acts[j][r]`` the
    feature's activation on each of them (the maximum sits at ``window_offsets[j, r]``)."""

    feature_ids: np.ndarray
    values: np.ndarray
    text_ids: np.ndarray
    positions: np.ndarray
    windows: list[list[list[str]]] = field(default_factory=list)
    window_acts: list[list[np.ndarray]] = field(default_factory=list)
    window_offsets: np.ndarray | None = None

    def describe(self, j: int, n: int = 5) -> str:
        """Feature ``feature_ids[j]``'s top contexts as text, the maximal token in [brackets]."""
        lines = [f"feature {int(self.feature_ids[j])}:"]
        for r in range(min(n, self.values.shape[1])):
            if not np.isfinite(self.values[j, r]):
                break
            toks = list(self.windows[j][r])
            o = int(self.window_offsets[j, r])
            toks[o] = f"[{toks[o]}]"
            lines.append(f"  {self.values[j, r]:7.3f}  {''.join(toks).replace(chr(9601), ' ')}")
        return "\n".join(lines)


@dataclass(repr=False)
class FeatureAttribution(Result):
    """Gradient x activation attribution of a scalar metric to SAE features: ``scores[t, i]`` is
    feature ``i``'s activation at token ``t`` times d(metric)/d(feature) (through the decoder);
    ``error_scores[t]`` the same for the error term. Their sum approximates the metric's change
    when the site's activation is zero-ablated (a first-order estimate)."""

    scores: np.ndarray
    error_scores: np.ndarray
    tokens: list[str]
    metric: float

    def top(self, n: int = 10) -> list[tuple[int, float]]:
        """The ``n`` features with the largest total |score| over tokens, with their summed score."""
        total = self.scores.sum(axis=0)
        order = np.argsort(-np.abs(total))[:n]
        return [(int(i), float(total[i])) for i in order]


def feature_activations(model: Any, sae: SAE, prompt: str, features: Sequence[int] | None = None, *,
                        top: int = 10, site: Site | str | None = None) -> FeatureActivations:
    """Feature activations over ``prompt`` (one trace). Without ``features``, the ``top`` features
    with the largest activation anywhere in the prompt, largest first."""
    h = _activations(model, _site(sae, site), prompt)
    acts = np.asarray(sae.encode(h), dtype=np.float32)
    if features is None:
        peak = acts.max(axis=0)
        features = [int(i) for i in np.argsort(-peak)[:top] if peak[i] > 0]
    ids = np.asarray(features, dtype=np.int64)
    return FeatureActivations(acts[:, ids], ids, _tokens(model, prompt), prompt)


def top_contexts(model: Any, sae: SAE, corpus: Iterable[str], features: Sequence[int] | None = None, *,
                 k: int = 10, window: int = 8, site: Site | str | None = None,
                 progress: bool = True) -> TopContexts:
    """The ``k`` top-activating tokens of each feature (all features by default) over ``corpus``
    (one trace per text; a tqdm progress bar unless ``progress=False``)."""
    site = _site(sae, site)
    ids = np.arange(sae.d_sae) if features is None else np.asarray(features, dtype=np.int64)
    best = np.full((len(ids), k), -np.inf, np.float32)
    where = np.zeros((len(ids), k, 2), np.int64)
    texts = list(corpus)
    for t, text in enumerate(_progress(texts, progress, "top contexts")):
        acts = np.asarray(sae.encode(_activations(model, site, text)), dtype=np.float32)[:, ids].T  # [n, T]
        vals = np.concatenate([best, acts], axis=1)
        refs = np.concatenate([where, np.stack(np.broadcast_arrays(t, np.arange(acts.shape[1])[None, :].repeat(
            len(ids), 0)), axis=-1)], axis=1)
        keep = np.argsort(-vals, axis=1, kind="stable")[:, :k]
        best = np.take_along_axis(vals, keep, axis=1)
        where = np.take_along_axis(refs, keep[..., None], axis=1)
    result = TopContexts(ids, best, where[..., 0], where[..., 1], window_offsets=np.zeros((len(ids), k), np.int64))
    # Windows: re-run only the texts that made some feature's top k.
    needed = sorted({int(t) for t, v in zip(where[..., 0].ravel(), best.ravel()) if np.isfinite(v)})
    cache = {t: (np.asarray(sae.encode(_activations(model, site, texts[t])), np.float32)[:, ids],
                 _tokens(model, texts[t])) for t in needed}
    for j in range(len(ids)):
        result.windows.append([])
        result.window_acts.append([])
        for r in range(k):
            if not np.isfinite(best[j, r]):
                result.windows[j].append([])
                result.window_acts[j].append(np.zeros(0, np.float32))
                continue
            acts, toks = cache[int(where[j, r, 0])]
            pos = int(where[j, r, 1])
            lo, hi = max(0, pos - window), min(len(toks), pos + window + 1)
            result.windows[j].append(toks[lo:hi])
            result.window_acts[j].append(acts[lo:hi, j])
            result.window_offsets[j, r] = pos - lo
    return result


def attribute(model: Any, sae: SAE, prompt: str, metric: Callable[[Any], Any], *,
              site: Site | str | None = None) -> FeatureAttribution:
    """Attribution of ``metric(logits)`` (a scalar; logits ``[1, T, vocab]``) to every feature at
    every token: activation x gradient through the decoder, from one forward and one backward."""
    h, grad, value = _with_gradient(model, _site(sae, site), prompt, metric)
    h, grad = _numpy(h)[0], _numpy(grad)[0]
    f = np.asarray(sae.encode(h), dtype=np.float32)
    directions = np.stack([np.asarray(sae.decoder_direction(i), np.float32) for i in range(sae.d_sae)]) \
        if sae.architecture == "topk" and sae.rescale_acts_by_decoder_norm else np.asarray(sae.W_dec, np.float32)
    scores = f * (grad @ directions.T)
    error = h - np.asarray(sae.forward(h), np.float32)
    return FeatureAttribution(scores, (error * grad).sum(-1), _tokens(model, prompt), float(_numpy(value)))


# --- backend plumbing -----------------------------------------------------------------------------

def _activations(model: Any, site: Site, text: str) -> np.ndarray:
    """The site's activation on ``text``: ``[T, d]`` float32."""
    with model.trace(text):
        h = site.read(model).save()
    return _numpy(h)[0]


def _with_gradient(model: Any, site: Site, text: str, metric: Callable[[Any], Any]) -> tuple[Any, Any, Any]:
    with model.trace(text):
        h = site.read(model).save()
        value = metric(_logits(model)).save()
        with value.backward():
            grad = h.grad.save()
    return h, grad, value


def _logits(model: Any) -> Any:
    if getattr(model, "view", "hf") == "mlx":
        return model.output
    return model.output.logits


def _tokens(model: Any, text: str) -> list[str]:
    tok = model.tokenizer
    return tok.convert_ids_to_tokens(tok(text)["input_ids"])


def _numpy(x: Any) -> np.ndarray:
    if backend.is_torch(x):
        return x.detach().float().cpu().numpy()
    import mlx.core as mx

    return np.array(x.astype(mx.float32)) if isinstance(x, mx.array) else np.asarray(x, dtype=np.float32)


def _progress(items: list, enabled: bool, desc: str) -> Iterable:
    if not enabled:
        return items
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return items
    return tqdm(items, desc=desc)
