"""A short tour of mlxsight on the bundled stories260K model: ``python -m mlxsight demo``.

Generation, saving a residual, a logit lens, activation patching and steering, each one traced
forward (or one traced generation) on a real trained model, in a few seconds.
"""

from __future__ import annotations

import time

import mlx.core as mx

from . import assets
from .model import LanguageModel
from .context import save
from .proxy import apply

CLEAN = "Once upon a time, there was a little girl named Lily. She was very happy. One day,"
LENS = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park."
HAPPY = ["She was very happy and smiled.", "They laughed and played all day.", "He was so happy and excited.",
         "The sun was shining and everyone was happy."]
SAD = ["She was very sad and cried.", "They cried and were sad all day.", "He was so sad and scared.",
       "The rain was falling and everyone was sad."]
STEER_CONTEXT = "Once upon a time, there was a little girl named Lily. She felt"


def main(argv: list[str] | None = None) -> int:
    start = time.perf_counter()
    model = LanguageModel(assets.path("stories260k"))
    tok = model.tokenizer
    layers = model.model.layers
    print(f"stories260K: {len(layers)} layers, d={model.config.hidden_size}, view: {model.view}\n")

    ids = model.generate("Once upon a time", max_new_tokens=40)
    print("1. greedy generation:\n   " + tok.decode(ids[0].tolist(), skip_special_tokens=True))

    with model.trace("Once upon a time") as tracer:
        resid = layers[2].output.save()
    print(f"\n2. residual stream after layer 2: shape {tuple(resid.shape)}, "
          f"norm at the last token {float(mx.linalg.norm(resid[0, -1])):.2f}")
    print("   the recorded graph:\n" + "\n".join("     " + line for line in str(tracer.graph).splitlines()))

    logit_lens(model)
    patching(model)
    steering(model)
    print(f"\n(done in {time.perf_counter() - start:.1f} s)")
    return 0


def next_token_nll(logits: mx.array, targets: mx.array) -> mx.array:
    """Mean negative log-likelihood of ``targets`` under ``logits`` at the positions before them."""
    logprobs = logits[0, :-1] - mx.logsumexp(logits[0, :-1], axis=-1, keepdims=True)
    return -mx.take_along_axis(logprobs, targets[:, None], axis=-1).mean()


def logit_lens(model: LanguageModel) -> None:
    """Final norm + unembedding applied to the residual after each layer: NLL of the real next tokens."""
    tok = model.tokenizer
    targets = mx.array(tok(LENS)["input_ids"][1:])
    residuals = [model.model.embed_tokens] + list(model.model.layers)
    # The HF view has lm_head even for tied embeddings; mlx-lm's own tree unembeds with the embedding.
    unembed = model.lm_head if hasattr(model, "lm_head") else model.model.embed_tokens.as_linear
    with model.trace(LENS):
        lens = [unembed(model.model.norm(r.output)) for r in residuals]
        nll = save([apply(next_token_nll, logits, targets) for logits in lens])
        top = save([logits[0, -1].argmax() for logits in lens])
    print("\n3. logit lens (NLL of the true next tokens; top guess after the last token):")
    for i, (n, t) in enumerate(zip(nll, top)):
        name = "embeddings" if i == 0 else f"layer {i - 1}"
        print(f"   {name:<11} NLL {float(n):6.2f}   top: {tok.convert_ids_to_tokens(int(t))!r}")


def patching(model: LanguageModel) -> None:
    """Patch the clean residual at the name position into the corrupted run, layer by layer."""
    tok = model.tokenizer
    corrupt = CLEAN.replace("Lily", "Tim")
    clean_ids, corrupt_ids = tok(CLEAN)["input_ids"], tok(corrupt)["input_ids"]
    pos = next(i for i, (a, b) in enumerate(zip(clean_ids, corrupt_ids)) if a != b)
    lily, tim = tok.convert_tokens_to_ids("▁Lily"), tok.convert_tokens_to_ids("▁Tim")
    results = []
    with model.trace(CLEAN):
        clean = _logit_diff(model, lily, tim).save()
    with model.trace(corrupt):
        base = _logit_diff(model, lily, tim).save()
    for i in range(len(model.model.layers)):
        with model.trace() as tracer:
            with tracer.invoke(CLEAN):
                h = model.model.layers[i].input[:, pos]
            with tracer.invoke(corrupt):
                x = model.model.layers[i].input  # asked for first: the clean body has bound h there
                x[:, pos] = h
                diff = _logit_diff(model, lily, tim).save()
        results.append(float(diff))
    clean, base = float(clean), float(base)
    print(f"\n4. activation patching, 'Lily' vs 'Tim' at position {pos}: logit diff clean {clean:.2f}, "
          f"corrupted {base:.2f}")
    for i, d in enumerate(results):
        print(f"   patch the residual into layer {i} at the name: diff {d:5.2f}  "
              f"(recovered {100 * (d - base) / (clean - base):4.0f}%)")


def steering(model: LanguageModel) -> None:
    """A happy-minus-sad direction after layer 3, its scale set by a divergence budget, added while generating."""
    from . import tools

    vector = tools.steering_vector(model, HAPPY, SAD, layer=3)
    search = tools.scale_search(model, STEER_CONTEXT, vector, tools.kl_div(), target=0.1, high=8.0)
    scale = round(search.scale, 2)
    result = tools.generate_steered(model, "Once upon a time", vector, scales=[0.0, scale], max_new_tokens=48)
    print(f"\n5. steering: mean residual after layer 3 over {vector.n_pairs} happy sentences minus their sad twins "
          f"(norm {vector.norm:.2f});\n   scale {scale} moves the next-token distribution after "
          f"'...{STEER_CONTEXT[-14:]}' by KL 0.1 nats (bisection, {len(search.evaluations)} forwards). "
          "Added at every token:")
    for s, text in zip(result.scales, result.texts):
        print(f"   scale {s:<4}: " + text.replace("\n", " "))


def _logit_diff(model: LanguageModel, a: int, b: int):
    logits = model.output.logits if model.view == "hf" else model.output
    return logits[0, -1, a] - logits[0, -1, b]
