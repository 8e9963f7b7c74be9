"""The tuned lens (Belrose et al. 2023): a learned affine translator per layer before the unembedding.

Translator ``i`` maps the residual stream entering decoder layer ``i`` (``i = 0``: the embeddings;
``i > 0``: the output of layer ``i - 1``) to ``h + W_i h + b_i``, trained so that decoding it with
the final norm and unembedding matches the model's final distribution (KL divergence). The last
layer's output needs no translator: it *is* the final residual stream. Translators start at zero, so
an untrained lens is exactly the logit lens.

Training runs on MLX (an mlxsight model); applying works on either backend and returns the same
``LensResult`` as ``logit_lens``. ``save``/``load`` use the directory format of the ``tuned-lens``
package (0.2.0): ``config.json`` (``TunedLensConfig``) and ``params.pt`` (the ``state_dict`` of its
``layer_translators``: ``"{i}.weight"`` ``[d, d]`` and ``"{i}.bias"`` ``[d]``), read with
``torch.load(weights_only=True)``, which refuses arbitrary pickled objects. ``params.pt`` needs torch
(``pip install "mlxsight[compat]"``).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_map

from . import backend
from .inputs import as_standardized, layer_indices, position_indices, token_ids
from .lens import LensResult, decode, read_residuals
from .standardize import Standardized

LENS_TYPE = "linear_tuned_lens"
# Translators decoded together hold at most this many logits (float32: 256 MB), so a step on a
# large vocabulary (SmolLM2: 49152 tokens x 30 layers) runs in groups of layers instead of at once.
LOGITS_BUDGET = 1 << 26


class TunedLens:
    """Per-layer affine translators; ``lens(model, prompt, ...)`` applies them like ``logit_lens``.

    Attributes:
        weight: ``[n_layers, d_model, d_model]`` float32 numpy (``W_i``, as torch's ``Linear.weight``).
        bias: ``[n_layers, d_model]`` float32 numpy.
        config: the ``tuned-lens`` ``TunedLensConfig`` fields (written to ``config.json``).
        held_out_kl: after ``train``, ``{"logit": [...], "tuned": [...]}``: mean KL(final || lens) in
            nats on held-out tokens per translator index, for the logit lens and for this lens.
    """

    def __init__(self, d_model: int, n_layers: int, *, bias: bool = True, base_model_name_or_path: str = "",
                 unembed_hash: str | None = None) -> None:
        self.weight = np.zeros((n_layers, d_model, d_model), np.float32)
        self.bias = np.zeros((n_layers, d_model), np.float32)
        self.config = {"base_model_name_or_path": base_model_name_or_path, "d_model": int(d_model),
                       "num_hidden_layers": int(n_layers), "bias": bool(bias), "base_model_revision": None,
                       "unembed_hash": unembed_hash, "lens_type": LENS_TYPE}
        self.held_out_kl: dict[str, list[float]] | None = None

    @property
    def n_layers(self) -> int:
        return self.weight.shape[0]

    @property
    def d_model(self) -> int:
        return self.weight.shape[1]

    @classmethod
    def from_model(cls, model: Any, bias: bool = True) -> "TunedLens":
        """An untrained (identity) lens sized for ``model``: it equals the logit lens exactly."""
        std = as_standardized(model)
        return cls(std.d_model, std.n_layers, bias=bias, base_model_name_or_path=_model_name(std),
                   unembed_hash=unembed_hash(std))

    # -- applying -----------------------------------------------------------------------------
    def __call__(self, model: Any, prompt: str | list[int], layers: list[int] | None = None, top_k: int = 5,
                 targets: list[int] | str | None = None, include_embeddings: bool = False,
                 positions: list[int] | None = None) -> LensResult:
        """Like ``logit_lens`` (same arguments and result, ``kind="tuned"``), translators applied first."""
        std = as_standardized(model)
        self._check(std)
        ids = token_ids(std, prompt)
        rows = layer_indices(layers, std.n_layers)
        labels = ([-1] if include_embeddings else []) + rows
        columns = position_indices(positions, len(ids))
        hidden = read_residuals(std, ids, rows, include_embeddings, columns)
        # translator index per row: the input of layer l + 1; the last layer's output needs none
        index = [layer + 1 for layer in labels]
        weight = np.stack([self.weight[i].T if i < self.n_layers else np.zeros_like(self.weight[0]) for i in index])
        bias = np.stack([self.bias[i] if i < self.n_layers else np.zeros_like(self.bias[0]) for i in index])
        with backend.no_grad(std.model):
            w = backend.from_numpy(std.model, weight, like=hidden)
            b = backend.from_numpy(std.model, bias[:, None, :], like=hidden)
            logits = std.logits(hidden + hidden @ w + b)
        return decode(std, logits, ids, labels, top_k, targets, "tuned", columns)

    def _check(self, std: Standardized) -> None:
        if (std.n_layers, std.d_model) != (self.n_layers, self.d_model):
            raise ValueError(f"this lens has {self.n_layers} translators of width {self.d_model}; the model has "
                             f"{std.n_layers} layers of width {std.d_model}")

    # -- training -----------------------------------------------------------------------------
    @classmethod
    def train(cls, model: Any, corpus: Iterable[str] | Iterable[list[int]], *, steps: int = 200,
              seq_len: int = 128, batch_size: int = 8, lr: float = 1e-3, weight_decay: float = 0.0,
              held_out: float = 0.1, seed: int = 0, progress: bool = True) -> "TunedLens":
        """Train a lens on ``model`` (an mlxsight model) over ``corpus`` (texts or token-id lists).

        The documents are tokenized, packed into windows of ``seq_len`` tokens, and split into a
        training set and a held-out fraction ``held_out``. Each of ``steps`` Adam steps traces one
        batch of ``batch_size`` windows, then minimises, summed over translators, the mean
        KL(final || lens) over its tokens. ``held_out_kl`` reports the held-out KL per translator
        for the logit lens and the trained lens. ``progress=False`` silences the progress bar.
        """
        std = as_standardized(model)
        if std.backend != backend.MLX:
            raise TypeError("TunedLens.train runs on MLX: pass an mlxsight model (the trained lens then "
                            "applies to an nnsight model of the same checkpoint too)")
        windows = _windows(std, corpus, seq_len)
        rng = random.Random(seed)
        rng.shuffle(windows)
        n_held = max(1, int(round(len(windows) * held_out))) if held_out > 0 else 0
        if len(windows) - n_held < 1:
            raise ValueError(f"the corpus gives {len(windows)} windows of {seq_len} tokens: too few to train on")
        held, train = windows[:n_held], windows[n_held:]
        lens = cls.from_model(std)
        params = _Translators(lens.n_layers, lens.d_model)
        import mlx.optimizers as optim

        optimizer = optim.AdamW(learning_rate=lr, weight_decay=weight_decay)
        step_fn = nn.value_and_grad(params, lambda p, h, logp, group: _kl_loss(std, p, h, logp, group).sum())
        bar = _progress(range(steps), progress, "tuned lens")
        for step in bar:
            batch = [train[(step * batch_size + j) % len(train)] for j in range(batch_size)]
            hidden, final_logp = _activations(std, batch)
            loss, grads = 0.0, None
            for group in _groups(lens.n_layers, final_logp.size):
                group_loss, group_grads = step_fn(params, hidden, final_logp, group)
                grads = group_grads if grads is None else tree_map(mx.add, grads, group_grads)
                loss = loss + group_loss
                mx.eval(loss, grads)
            optimizer.update(params, grads)
            mx.eval(params.parameters(), optimizer.state, loss)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(kl=f"{float(loss) / lens.n_layers:.3f}")
        lens.weight = np.array(params.weight, dtype=np.float32)
        lens.bias = np.array(params.bias, dtype=np.float32)
        if held:
            lens.held_out_kl = {"logit": _held_out_kl(std, _Translators(lens.n_layers, lens.d_model), held, batch_size),
                                "tuned": _held_out_kl(std, params, held, batch_size)}
        return lens

    # -- tuned-lens directory format ----------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``config.json`` and ``params.pt`` as the ``tuned-lens`` package does."""
        import torch

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = OrderedDict()
        for i in range(self.n_layers):
            state[f"{i}.weight"] = torch.from_numpy(np.ascontiguousarray(self.weight[i]))
            if self.config["bias"]:
                state[f"{i}.bias"] = torch.from_numpy(np.ascontiguousarray(self.bias[i]))
        torch.save(state, path / "params.pt")
        (path / "config.json").write_text(json.dumps(self.config))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "TunedLens":
        """Read a ``tuned-lens`` directory (``config.json`` + ``params.pt``) without unpickling code."""
        import torch

        path = Path(path)
        config = json.loads((path / "config.json").read_text())
        if config.get("lens_type", LENS_TYPE) != LENS_TYPE:
            raise ValueError(f"{path}: lens_type {config['lens_type']!r} is not {LENS_TYPE!r}")
        lens = cls(config["d_model"], config["num_hidden_layers"], bias=config.get("bias", True),
                   base_model_name_or_path=config.get("base_model_name_or_path", ""),
                   unembed_hash=config.get("unembed_hash"))
        lens.config.update({k: v for k, v in config.items() if k in lens.config})
        state = torch.load(path / "params.pt", map_location="cpu", weights_only=True)
        expected = {f"{i}.{p}" for i in range(lens.n_layers) for p in (("weight", "bias") if lens.config["bias"]
                                                                        else ("weight",))}
        if set(state) != expected:
            raise ValueError(f"{path / 'params.pt'}: unexpected keys {sorted(set(state) ^ expected)[:6]}")
        for i in range(lens.n_layers):
            lens.weight[i] = _checked(state[f"{i}.weight"], lens.weight[i].shape, f"{i}.weight")
            if lens.config["bias"]:
                lens.bias[i] = _checked(state[f"{i}.bias"], lens.bias[i].shape, f"{i}.bias")
        return lens


def _checked(tensor: Any, shape: tuple, name: str) -> np.ndarray:
    array = backend.to_numpy(tensor, np.float32)
    if array.shape != shape:
        raise ValueError(f"params.pt: {name} has shape {array.shape}, expected {shape}")
    return array


class _Translators(nn.Module):
    """The trainable parameters: every translator's ``W`` and ``b``, zero-initialised."""

    def __init__(self, n_layers: int, d_model: int) -> None:
        super().__init__()
        self.weight = mx.zeros((n_layers, d_model, d_model))
        self.bias = mx.zeros((n_layers, d_model))

    def __call__(self, hidden: mx.array, group: list[int]) -> mx.array:
        """Translators ``group`` applied to their layers' states: ``[len(group), N, d]`` of ``hidden [L, N, d]``."""
        index = mx.array(group)
        h = hidden[index]
        return h + h @ self.weight[index].swapaxes(-1, -2) + self.bias[index][:, None, :]


def _groups(n_layers: int, logits_per_layer: int) -> list[list[int]]:
    """Translator indices in groups whose logits fit ``LOGITS_BUDGET``."""
    size = max(1, min(n_layers, LOGITS_BUDGET // max(logits_per_layer, 1)))
    return [list(range(i, min(i + size, n_layers))) for i in range(0, n_layers, size)]


def _kl_loss(std: Standardized, translators: _Translators, hidden: mx.array, final_logp: mx.array,
             group: list[int]) -> mx.array:
    """Mean KL(final || lens) over the ``N`` tokens of ``hidden [L, N, d]``, per translator in ``group``."""
    logits = std.logits(translators(hidden, group)).astype(mx.float32)
    logq = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    return (mx.exp(final_logp) * (final_logp - logq)).sum(-1).mean(-1)


def _activations(std: Standardized, batch: list[list[int]]) -> tuple[mx.array, mx.array]:
    """The inputs of every layer ``[L, B*T, d]`` and the final log-probabilities ``[B*T, V]``."""
    layers = std.layers

    def read(_: Any) -> list:
        return [backend.first(layer.input) for layer in layers] + [backend.first(layers[-1].output)]

    saved = backend.run(std.model, batch, read)
    hidden = mx.stack([h.reshape(-1, h.shape[-1]) for h in saved[:-1]]).astype(mx.float32)
    final = std.logits(saved[-1].reshape(-1, saved[-1].shape[-1])).astype(mx.float32)
    return mx.stop_gradient(hidden), final - mx.logsumexp(final, axis=-1, keepdims=True)


def _held_out_kl(std: Standardized, translators: _Translators, windows: list[list[int]],
                 batch_size: int) -> list[float]:
    total = np.zeros(std.n_layers)
    for start in range(0, len(windows), batch_size):
        batch = windows[start:start + batch_size]
        hidden, final_logp = _activations(std, batch)
        for group in _groups(std.n_layers, final_logp.size):
            total[group] += np.array(_kl_loss(std, translators, hidden, final_logp, group)) * len(batch)
    return [float(x) for x in total / len(windows)]


def _windows(std: Standardized, corpus: Iterable[str] | Iterable[list[int]], seq_len: int) -> list[list[int]]:
    """Documents tokenized (texts with the model's tokenizer), concatenated and cut into windows."""
    stream: list[int] = []
    for doc in corpus:
        stream += token_ids(std, doc) if isinstance(doc, str) else [int(i) for i in doc]
    return [stream[i:i + seq_len] for i in range(0, len(stream) - seq_len + 1, seq_len)]


def _progress(it: Iterable, enabled: bool, desc: str) -> Any:
    if not enabled:
        return it
    try:
        from tqdm.auto import tqdm
    except ImportError:  # no tqdm: train silently
        return it
    return tqdm(it, desc=desc)


def _model_name(std: Standardized) -> str:
    config = std.model.config
    return str(getattr(config, "name_or_path", None) or getattr(config, "_name_or_path", None) or "")


def unembed_hash(std: Standardized) -> str:
    """The ``tuned-lens`` package's fingerprint of the unembedding matrix (sha256 of numpy's
    one-decimal ``array_str``), so lenses saved here pass its check against the model."""
    backend.loaded(std.model)
    module = std.unembedding if std.unembedding is not None else std.embedding
    weight = backend.to_numpy(module.weight, np.float32)
    return hashlib.sha256(np.array_str(weight, precision=1).encode()).hexdigest()
