"""Tiny random checkpoints that both mlx-lm and transformers load, for ten architectures.

``build_checkpoint(arch, out_dir)`` writes a transformers ``save_pretrained`` directory (float32
safetensors, config.json, a byte-level BPE tokenizer) in a form ``mlx_lm.load`` also reads,
without patching either library: config.json gets the flat keys mlx-lm's ``ModelArgs`` read
(``rope_theta`` beside transformers 5's ``rope_parameters``, ``n_ctx``, ``rotary_pct``, ...), and
GPT-2's weights are stored hub-style, without the ``transformer.`` prefix.

torch and transformers are imported lazily; import ``mlx.core`` first in the calling process
(nnsight or transformers importing mlx on their own aborts the process).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

ARCHS = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3", "gpt2", "gpt_neox",
         "olmo2")

BOS, EOS = "<s>", "</s>"
HIDDEN, LAYERS, HEADS, KV_HEADS, HEAD_DIM, FFN, POSITIONS = 64, 4, 4, 2, 16, 128, 256

# Tying each mlx-lm class can express: None = follows the checkpoint (lm_head present or not),
# True = always ties to the input embedding, False = always has its own output matrix.
MLX_TIED = {"gemma2": True, "gpt2": True, "gpt_neox": False}


# -- tokenizer ---------------------------------------------------------------------------------

def corpus(n: int = 400, seed: int = 0) -> list[str]:
    """A few hundred short, varied English sentences (deterministic)."""
    rng = random.Random(seed)
    names = ["Lily", "Tom", "Sam", "Mia", "Ben", "Anna", "the cat", "the dog", "a bird",
             "my mother", "the old man", "a little girl", "the teacher", "our friend"]
    verbs = ["saw", "liked", "found", "painted", "carried", "wanted", "opened", "shared",
             "lost", "made", "watched", "followed", "cleaned", "heard"]
    things = ["a red ball", "the big tree", "some apples", "a small boat", "the blue door",
              "a funny hat", "the garden", "a new book", "three cookies", "the river",
              "a shiny coin", "the moon", "warm bread", "a paper kite"]
    places = ["in the park", "at home", "near the sea", "by the school", "under the bridge",
              "in the kitchen", "on the hill", "at the market", "in the forest"]
    times = ["Once upon a time,", "One day,", "Yesterday,", "In the morning,", "After lunch,",
             "Every summer,", "Later that night,", "On Monday,"]
    ends = [".", "!", ".", "?", "."]
    out = []
    for i in range(n):
        s = f"{rng.choice(names)} {rng.choice(verbs)} {rng.choice(things)} {rng.choice(places)}"
        if i % 3 == 0:
            s = f"{rng.choice(times)} {s}"
        if i % 5 == 0:
            s += f" and {rng.choice(verbs)} {rng.randint(2, 99)} of them"
        s = s[0].upper() + s[1:] + rng.choice(ends)
        out.append(s)
    out += ["The quick brown fox jumps over the lazy dog.", "Hello, world!",
            "The Eiffel Tower is in the city of Paris."]
    return out


def build_tokenizer(out_dir: str | os.PathLike, vocab_size: int = 512) -> Path:
    """Train a byte-level BPE tokenizer and save it for ``AutoTokenizer`` and ``mlx_lm.load``.

    Llama conventions: ``<s>`` (id 0) is prepended by the post-processor, ``</s>`` (id 1) is the
    eos token, no pad token (loaders set pad = eos).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BOS, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus(), trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B",
                                      special_tokens=[(BOS, bos_id)]),
    ])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS,
                                   model_max_length=POSITIONS, clean_up_tokenization_spaces=False)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out)
    # Explicit nulls: transformers 5 loads qwen2 checkpoints with Qwen2Tokenizer whatever the
    # tokenizer_class, whose defaults would add "<|endoftext|>" (id = vocab_size) as unk and pad.
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(pad_token=None, unk_token=None)
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return out


# -- checkpoints -------------------------------------------------------------------------------

def _config(arch: str, vocab_size: int, bos_id: int, eos_id: int, overrides: dict[str, Any]):
    """The transformers config for ``arch`` plus the flat keys mlx-lm reads from config.json."""
    import transformers as tf

    ids = dict(vocab_size=vocab_size, bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=None,
               tie_word_embeddings=MLX_TIED.get(arch, False))
    dec = dict(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
               num_key_value_heads=KV_HEADS, intermediate_size=FFN,
               max_position_embeddings=POSITIONS, rms_norm_eps=1e-6, **ids)
    rope = {"rope_type": "default", "rope_theta": 10000.0}
    if arch in ("llama", "mistral", "qwen2", "olmo2"):
        cls = {"llama": tf.LlamaConfig, "mistral": tf.MistralConfig, "qwen2": tf.Qwen2Config,
               "olmo2": tf.Olmo2Config}[arch]
        extra = {"sliding_window": None} if arch in ("mistral", "qwen2") else {}
        kw = dict(dec, rope_parameters=rope, **extra)
    elif arch == "qwen3":
        cls, kw = tf.Qwen3Config, dict(dec, head_dim=HEAD_DIM, rope_parameters=rope)
    elif arch == "phi3":
        cls = tf.Phi3Config
        kw = dict(dec, rope_parameters=dict(rope, partial_rotary_factor=1.0))
    elif arch == "gemma2":
        cls = tf.Gemma2Config
        kw = dict(dec, head_dim=HEAD_DIM, query_pre_attn_scalar=HEAD_DIM, rope_parameters=rope,
                  attn_logit_softcapping=50.0, final_logit_softcapping=30.0, sliding_window=4096)
    elif arch == "gemma3":
        cls = tf.Gemma3TextConfig
        # mlx-lm's gemma3_text derives sliding/global from sliding_window_pattern: layer i is
        # global when (i + 1) % pattern == 0; transformers 5 reads layer_types.
        pattern, layers = 2, overrides.get("num_hidden_layers", LAYERS)
        kw = dict(dec, head_dim=HEAD_DIM, query_pre_attn_scalar=HEAD_DIM, sliding_window=4096,
                  layer_types=["full_attention" if (i + 1) % pattern == 0 else
                               "sliding_attention" for i in range(layers)],
                  rope_parameters={"sliding_attention": {"rope_type": "default",
                                                         "rope_theta": 10000.0},
                                   "full_attention": {"rope_type": "default",
                                                      "rope_theta": 1000000.0}})
    elif arch == "gpt2":
        cls = tf.GPT2Config
        kw = dict(n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_positions=POSITIONS,
                  activation_function="gelu_new", **ids)
    elif arch == "gpt_neox":
        cls = tf.GPTNeoXConfig
        # mlx-lm hard-codes the tanh GELU and a 4x MLP.
        kw = dict(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                  intermediate_size=4 * HIDDEN, max_position_embeddings=POSITIONS,
                  hidden_act="gelu_new", use_parallel_residual=True,
                  rope_parameters=dict(rope, partial_rotary_factor=0.25), **ids)
    else:
        raise ValueError(f"unknown arch {arch!r}; expected one of {ARCHS}")
    kw.update(overrides)
    config = cls(**kw)
    config.dtype = "float32"
    fixed = MLX_TIED.get(arch)
    if fixed is not None and bool(config.tie_word_embeddings) != fixed:
        raise ValueError(f"mlx-lm's {arch} cannot express tie_word_embeddings="
                         f"{config.tie_word_embeddings}")
    return config


def _flat_keys(arch: str, config) -> dict[str, Any]:
    """Legacy flat config keys that mlx-lm's ``ModelArgs`` read (transformers 5 nests them)."""
    rp = getattr(config, "rope_parameters", None) or {}
    if arch == "gemma3":
        return {"rope_theta": rp["full_attention"]["rope_theta"],
                "rope_local_base_freq": rp["sliding_attention"]["rope_theta"],
                "sliding_window_pattern": _gemma3_pattern(config.layer_types)}
    if arch == "gpt2":
        return {"n_ctx": config.n_positions}
    if arch == "gpt_neox":
        return {"rotary_emb_base": rp["rope_theta"],
                "rotary_pct": rp.get("partial_rotary_factor", 1.0)}
    flat = {"rope_theta": rp["rope_theta"]}
    if rp.get("rope_type", "default") != "default":  # mlx-lm reads scaled RoPE from rope_scaling
        flat["rope_scaling"] = {**rp, "type": rp["rope_type"]}
    if arch == "phi3":
        flat["partial_rotary_factor"] = rp.get("partial_rotary_factor", 1.0)
    return flat


def _gemma3_pattern(layer_types: list[str]) -> int:
    for pattern in range(1, len(layer_types) + 1):
        if all((t == "full_attention") == ((i + 1) % pattern == 0)
               for i, t in enumerate(layer_types)):
            return pattern
    raise ValueError(f"mlx-lm's gemma3_text cannot express layer_types={layer_types}")


def _randomize(model, seed: int) -> None:
    """Re-draw every parameter so that all of them (norms, biases) shape the logits.

    Embeddings ~ N(0, 1), matrices ~ N(0, 1/fan_in) (activations stay O(1), logits O(1)),
    1-d parameters (norm weights, biases) get N(0, 0.1) added to their initial value.
    """
    import torch
    from transformers.pytorch_utils import Conv1D

    gen = torch.Generator().manual_seed(seed)
    seen = set()
    with torch.no_grad():
        for module in model.modules():
            for p in module.parameters(recurse=False):
                if id(p) in seen:  # tied lm_head
                    continue
                seen.add(id(p))
                if isinstance(module, torch.nn.Embedding):
                    fan_in = 1
                elif p.ndim >= 2:
                    fan_in = p.shape[0] if isinstance(module, Conv1D) else p.shape[-1]
                else:
                    p.add_(0.1 * torch.randn(p.shape, generator=gen))
                    continue
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in ** 0.5)


def build_checkpoint(arch: str, out_dir: str | os.PathLike, *, seed: int = 0,
                     vocab_size: int = 512, **config_overrides: Any) -> Path:
    """Write a tiny random float32 ``arch`` checkpoint (plus tokenizer) into ``out_dir``."""
    import torch
    import transformers as tf
    from safetensors.torch import load_file, save_file

    out = build_tokenizer(out_dir, vocab_size=vocab_size)
    tok = tf.PreTrainedTokenizerFast(tokenizer_file=str(out / "tokenizer.json"))
    config = _config(arch, len(tok), tok.convert_tokens_to_ids(BOS),
                     tok.convert_tokens_to_ids(EOS), config_overrides)
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    _randomize(model, seed)
    model.save_pretrained(out)

    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(_flat_keys(arch, config))
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    if arch == "gpt2":
        # mlx-lm's gpt2.sanitize prefixes "model." to hub-style keys ("h.0.attn...");
        # transformers loads either form.
        path = out / "model.safetensors"
        weights = load_file(path)
        save_file({k.removeprefix("transformer."): v.contiguous() for k, v in weights.items()},
                  path, metadata={"format": "pt"})
    return out


# -- cache -------------------------------------------------------------------------------------

_SOURCE_HASH = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:10]
_process_root: Path | None = None


def _default_root() -> Path:
    global _process_root
    if env := os.environ.get("MLXSIGHT_TEST_CACHE"):
        return Path(env)
    if _process_root is None:
        _process_root = Path(tempfile.mkdtemp(prefix="mlxsight-tiny-"))
        atexit.register(shutil.rmtree, _process_root, True)
    return _process_root


def cached_checkpoint(arch: str, root: str | os.PathLike | None = None, **overrides: Any) -> Path:
    """``build_checkpoint(arch, ...)`` once per cache root, keyed by arch, overrides and this file.

    The root is ``root``, else ``$MLXSIGHT_TEST_CACHE``, else a per-process temp dir.
    """
    root = Path(root) if root is not None else _default_root()
    key = json.dumps([arch, overrides, _SOURCE_HASH], sort_keys=True, default=repr)
    name = f"{arch}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    final = root / name
    if (final / "config.json").exists():
        return final
    root.mkdir(parents=True, exist_ok=True)
    # Build aside and rename, so concurrent processes sharing a root never see half a checkpoint.
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        build_checkpoint(arch, staging, **overrides)
        try:
            staging.rename(final)
        except OSError:
            if not (final / "config.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
