"""A text corpus sampled from a language model itself, generated once and cached (never downloaded).

The bundled stories260K writes TinyStories-like text; its own samples are the corpus its SAEs are
trained and evaluated on. Generation is seeded, so a cache miss regenerates the same texts.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import mlx.core as mx


def cache_dir() -> Path:
    return Path(os.environ.get("MLXSIGHT_CACHE", Path.home() / ".cache" / "mlxsight")) / "corpus"


def sampled_corpus(model: Any, n_texts: int = 512, *, max_new_tokens: int = 128, temperature: float = 1.0,
                   batch_size: int = 64, seed: int = 0, cache: bool = True) -> list[str]:
    """``n_texts`` texts sampled from ``model`` (an mlxsight ``LanguageModel``) starting from BOS,
    at ``temperature``. Cached under ``~/.cache/mlxsight/corpus`` (``$MLXSIGHT_CACHE``), keyed by
    the model's weights and the arguments."""
    key = _key(model, n_texts, max_new_tokens, temperature, seed)
    path = cache_dir() / f"{key}.json"
    if cache and path.exists():
        return json.loads(path.read_text())["texts"]
    tok = model.tokenizer
    bos = tok.bos_token_id
    mx.random.seed(seed)
    texts: list[str] = []
    while len(texts) < n_texts:
        rows = min(batch_size, n_texts - len(texts))
        ids = model.generate(mx.array([[bos]] * rows), max_new_tokens=max_new_tokens, do_sample=True,
                             temperature=temperature)
        for row in ids.tolist():
            text = tok.decode(row, skip_special_tokens=True).strip()
            if text:
                texts.append(text)
    texts = texts[:n_texts]
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"texts": texts, "n_texts": n_texts, "max_new_tokens": max_new_tokens,
                                   "temperature": temperature, "seed": seed}))
        tmp.replace(path)
    return texts


def _key(model: Any, *args: Any) -> str:
    h = hashlib.sha256(repr(args).encode())
    module = getattr(model, "mlx_model", None)
    if module is not None:
        from mlx.utils import tree_flatten

        for name, value in tree_flatten(module.parameters())[:4]:  # a weight fingerprint, cheaply
            h.update(name.encode())
            h.update(bytes(memoryview(value.astype(mx.float32)))[:4096])
    return h.hexdigest()[:16]
