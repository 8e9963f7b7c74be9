"""Text corpora for lenses and SAEs without a download: text sampled from the model itself.

For the bundled stories260k a few hundred sampled stories are TinyStories-like, which is all a tuned
lens or a small SAE needs (both only need text from the model's own distribution).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterator

import mlx.core as mx
import numpy as np

from . import backend
from .inputs import as_standardized
from .standardize import Standardized
from .tuned_lens import unembed_hash


def sample_corpus(model: Any, n: int = 256, max_tokens: int = 256, temperature: float = 1.0, seed: int = 0,
                  cache: bool = True, batch_size: int = 64) -> list[str]:
    """``n`` texts sampled from ``model`` itself (an mlxsight model), starting from its BOS token.

    A tuned lens only needs text from the model's own distribution: for the bundled stories260k
    this gives TinyStories-like stories without downloading anything. Cached (``cache=True``) as
    JSON under ``mlxsight.assets.cache_dir()/corpora``, keyed by the model's weights and arguments.
    """
    from .. import assets

    std = as_standardized(model)
    if std.backend != backend.MLX:
        raise TypeError("sample_corpus samples with MLX: pass an mlxsight model")
    key = json.dumps([unembed_hash(std), n, max_tokens, temperature, seed])
    file = assets.cache_dir() / "corpora" / f"sampled-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
    if cache and file.exists():
        return json.loads(file.read_text())
    texts = list(_sample(std, n, max_tokens, temperature, seed, batch_size))
    if cache:
        file.parent.mkdir(parents=True, exist_ok=True)
        partial = file.with_suffix(".partial")
        partial.write_text(json.dumps(texts))
        partial.replace(file)
    return texts


def _sample(std: Standardized, n: int, max_tokens: int, temperature: float, seed: int,
            batch_size: int) -> Iterator[str]:
    from mlx_lm.models.cache import make_prompt_cache

    lm = std.model
    mlx_model, tokenizer = lm.mlx_model, lm.tokenizer
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    eos = getattr(lm.config, "eos_token_id", None)
    eos = set(eos) if isinstance(eos, (list, tuple)) else {eos if eos is not None else tokenizer.eos_token_id}
    key = mx.random.key(seed)
    for start in range(0, n, batch_size):
        rows = min(batch_size, n - start)
        cache = make_prompt_cache(mlx_model)
        ids = mx.full((rows, 1), bos, dtype=mx.int32)
        out = []
        for _ in range(max_tokens):
            logits = mlx_model(ids, cache=cache)[:, -1].astype(mx.float32)
            key, sub = mx.random.split(key)
            ids = mx.random.categorical(logits / max(temperature, 1e-6), key=sub)[:, None].astype(mx.int32)
            out.append(ids)
        tokens = np.array(mx.concatenate(out, axis=1)).tolist()
        for row in tokens:
            stop = next((i for i, t in enumerate(row) if t in eos), len(row))
            yield tokenizer.decode(row[:stop])
