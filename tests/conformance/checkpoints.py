"""An offline Hugging Face cache with the model ids, architectures and shapes the suites load.

``hf_home()`` returns a ``HF_HOME`` whose ``hub/models--ORG--NAME/snapshots/<rev>/`` folders hold
``save_pretrained`` output of randomly initialised models (``from_config``, seeded) plus a
tokenizer, so ``from_pretrained("openai-community/gpt2")`` and ``mlx_lm.load("gpt2")`` both resolve
with ``HF_HUB_OFFLINE=1``. The weights are random: tests that assert what a *trained* GPT-2 says fail
on every backend and are reported as such.

Import ``mlx.core`` (or mlxsight) before calling: transformers is imported here.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from .sources import cache_dir

RECIPE = 8  # bump when a model below changes: the cache is rebuilt
REVISION = "0" * 40

GPT2 = dict(n_layer=12, n_embd=768, n_head=12, n_positions=1024)  # gpt2's shape: published code indexes h[0..11]
LLAMAS = {
    "hf-internal-testing/tiny-random-LlamaForCausalLM": dict(hidden_size=16, intermediate_size=64,
                                                             num_hidden_layers=2, num_attention_heads=4,
                                                             num_key_value_heads=4),
    "Maykeye/TinyLLama-v0": dict(hidden_size=64, intermediate_size=256, num_hidden_layers=8,
                                 num_attention_heads=16, num_key_value_heads=16),
    "yujiepan/llama-2-tiny-random": dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2),
    # nnsight.net's tutorials: the DAS tutorial patches layer 8 and builds a 2048-wide rotation, so
    # Llama-3.2-1B keeps its 16 layers and hidden width, with narrow heads and MLPs (about 8M weights).
    "meta-llama/Llama-3.2-1B": dict(hidden_size=2048, intermediate_size=32, num_hidden_layers=16,
                                    num_attention_heads=2, num_key_value_heads=1, head_dim=16),
    "meta-llama/Llama-3.3-70B-Instruct": dict(hidden_size=16, intermediate_size=64, num_hidden_layers=2,
                                              num_attention_heads=4, num_key_value_heads=2),
    "meta-llama/Meta-Llama-3.1-8B": dict(hidden_size=16, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2),
}
GPT2_IDS = ("gpt2", "openai-community/gpt2")
# intermediate 4 x hidden: the one width mlx-lm's GPT-NeoX builds (the hub repo has 37).
NEOX = {"hf-internal-testing/tiny-random-GPTNeoXForCausalLM": dict(hidden_size=32, intermediate_size=128,
                                                                   num_hidden_layers=5, num_attention_heads=4,
                                                                   rotary_pct=0.25)}
# A Llama-2-style template, so chat inputs are templated as on the hub checkpoints that carry one.
CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
                 "{% else %} {{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}")


def hf_home() -> Path:
    """Build (once per recipe) and return the ``HF_HOME`` of the offline cache.

    Each recipe has its own folder, built aside and renamed into place, so runs of checkouts with
    other recipes (or two runs building at once) never delete a cache another run is reading."""
    home = cache_dir() / f"hf-recipe{RECIPE}"
    if (home / "recipe.json").exists():
        return home
    cache_dir().mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f"{home.name}.building.", dir=cache_dir()))
    try:
        tok = _gpt2_tokenizer()
        for repo in GPT2_IDS:
            _gpt2(_snapshot(build, repo), tok)
        for repo, shape in LLAMAS.items():
            _llama(_snapshot(build, repo), shape)
        for repo, shape in NEOX.items():
            _neox(_snapshot(build, repo), shape, tok)
        (build / "recipe.json").write_text(json.dumps({"recipe": RECIPE}))
        try:
            build.rename(home)
        except OSError:  # another run finished the same recipe first: use its folder
            if not (home / "recipe.json").exists():
                raise
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return home


def _snapshot(home: Path, repo: str) -> Path:
    folder = home / "hub" / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(REVISION)
    snap = folder / "snapshots" / REVISION
    snap.mkdir(parents=True, exist_ok=True)
    return snap


def _corpus() -> list[str]:
    from tiny_models import corpus

    return corpus(2000) + ["Madison Square Garden is located in the city of New York City.",
                           "The Eiffel Tower is in the center of Paris."] * 20 + IOI_PROMPTS * 20


# The indirect-object prompts of nnsight.net's patching tutorials: gpt2's tokenizer makes every name
# and word one token, so the eight prompts batch without padding; a BPE that has seen them does too.
IOI_PROMPTS = [f"{w} {a} and {b} went to the {p}, {c} gave {t} to {d}" for w, a, b, p, t in (
    ("When", "John", "Mary", "shops", "the bag"), ("When", "Tom", "James", "park", "the ball"),
    ("When", "Dan", "Sid", "shops", "an apple"), ("After", "Martin", "Amy", "park", "a drink"))
    for c, d in ((a, b), (b, a))]


def _gpt2_tokenizer():
    """A byte-level BPE with GPT-2's single special token (trained with ``tokenizers``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2TokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=2048, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(_corpus(), trainer)
    end = "<|endoftext|>"
    return GPT2TokenizerFast(tokenizer_object=bpe, bos_token=end, eos_token=end, unk_token=end,
                             model_max_length=1024)


def _gpt2(snap: Path, tok) -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    end = tok.convert_tokens_to_ids("<|endoftext|>")
    config = GPT2Config(vocab_size=len(tok), bos_token_id=end, eos_token_id=end, **GPT2)
    torch.manual_seed(0)
    GPT2LMHeadModel(config).eval().save_pretrained(snap)  # transformers' own layout: `transformer.` keys
    tok.save_pretrained(snap)


def _llama(snap: Path, shape: dict) -> None:
    """A Llama of the repo's widths with the bundled stories260K tokenizer (vocab 512)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from mlxsight import assets

    tok = AutoTokenizer.from_pretrained(assets.path("stories260k"))
    tok.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(vocab_size=512, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         max_position_embeddings=512, tie_word_embeddings=False, **shape)
    torch.manual_seed(0)
    LlamaForCausalLM(config).eval().save_pretrained(snap)
    tok.save_pretrained(snap)


def _neox(snap: Path, shape: dict, tok) -> None:
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    end = tok.convert_tokens_to_ids("<|endoftext|>")
    config = GPTNeoXConfig(vocab_size=len(tok), bos_token_id=end, eos_token_id=end, max_position_embeddings=512,
                           **shape)
    torch.manual_seed(0)
    GPTNeoXForCausalLM(config).eval().save_pretrained(snap)
    tok.save_pretrained(snap)
