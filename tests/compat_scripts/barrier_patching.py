"""nnsight.net's IOI activation-patching tutorial, as one trace: a clean invoke rebinds
`hidden_state` at every layer and calls that layer's barrier; each patching invoke calls its
layer's barrier, then writes one position of `hidden_state` into its own run. nnsight runs invoke
bodies as workers, so at the barrier `hidden_state` is that layer's output. The tutorial's code with
two changes for nnsight 0.8.1 on transformers 5 (the tutorial's own lines raise there on nnsight
itself): no `invoker.inputs` (its Invoker has none), and a GPT-2 block's output is the hidden state
itself, not a tuple, so no `[0]`.

Then three checks of the rules the workers follow, each asserted on both backends: a barrier called
by fewer bodies than it waits for is nnsight's ValueError; a body asking, after a barrier, for a
point the forward already passed for another body is an OutOfOrderError; a failed trace leaves the
next one working."""
import sys

import nnsight
from nnsight import LanguageModel
from transformers import AutoTokenizer

model = LanguageModel(sys.argv[1], tokenizer=AutoTokenizer.from_pretrained(sys.argv[1]))

clean_prompt = "Once upon a time the cat sat on the mat"
corrupted_prompt = "Once upon a time the dog sat on the mat"
correct_index, incorrect_index = 7, 9
tokenized_prompt = model.tokenizer(clean_prompt)["input_ids"]
N_LAYERS = len(model.transformer.h)

ioi_patching_results = []
with model.trace() as tracer:
    barriers_per_layer = [tracer.barrier(len(tokenized_prompt) + 1) for _ in range(N_LAYERS)]

    with tracer.invoke(clean_prompt) as invoker:
        for layer_idx in range(N_LAYERS):
            hidden_state = model.transformer.h[layer_idx].output
            barriers_per_layer[layer_idx]()
        clean_logits = model.lm_head.output
        clean_logit_diff = (clean_logits[0, -1, correct_index] - clean_logits[0, -1, incorrect_index]).save()

    with tracer.invoke(corrupted_prompt) as invoker:
        corrupted_logits = model.lm_head.output
        corrupted_logit_diff = (
            corrupted_logits[0, -1, correct_index] - corrupted_logits[0, -1, incorrect_index]
        ).save()

    for layer_idx in range(N_LAYERS):
        _ioi_patching_results = []
        for token_idx in range(len(tokenized_prompt)):
            with tracer.invoke(corrupted_prompt) as invoker:
                barriers_per_layer[layer_idx]()
                model.transformer.h[layer_idx].output[:, token_idx, :] = hidden_state[:, token_idx, :]
                patched_logits = model.lm_head.output
                patched_logit_diff = patched_logits[0, -1, correct_index] - patched_logits[0, -1, incorrect_index]
                patched_result = (patched_logit_diff - corrupted_logit_diff) / (clean_logit_diff - corrupted_logit_diff)
                _ioi_patching_results.append(patched_result.item())
        ioi_patching_results.append(_ioi_patching_results)
        ioi_patching_results.save()

# the same handover, saved rather than turned into numbers, and each layer's value at its barrier
with model.trace() as tracer:
    barriers = [tracer.barrier(2) for _ in range(N_LAYERS)]
    with tracer.invoke(clean_prompt):
        for layer_idx in range(N_LAYERS):
            hidden_state = model.transformer.h[layer_idx].output
            barriers[layer_idx]()
    handed = []
    for layer_idx in range(N_LAYERS):
        with tracer.invoke(corrupted_prompt):
            barriers[layer_idx]()
            handed.append(hidden_state[:, -1, :].save())
            model.transformer.h[layer_idx].output[:, -1, :] = hidden_state[:, -1, :]
            patched_last = model.lm_head.output[:, -1, :].save()
    handed = nnsight.save(handed)

try:  # too few bodies reach the barrier
    with model.trace() as tracer:
        barrier = tracer.barrier(2)
        with tracer.invoke(clean_prompt):
            model.transformer.h[0].output
            barrier()
    raise SystemExit("no error for a barrier that never fills")
except ValueError as error:
    assert "never reached by every block" in str(error), error

try:  # after the barrier the forward is at layer 1: layer 0 is behind it
    with model.trace() as tracer:
        barrier = tracer.barrier(2)
        with tracer.invoke(clean_prompt):
            late = model.transformer.h[1].output
            barrier()
        with tracer.invoke(corrupted_prompt):
            barrier()
            model.transformer.h[0].output[:] = late
    raise SystemExit("no error for a point the forward already passed")
except Exception as error:
    assert type(error).__name__ == "OutOfOrderError", repr(error)

with model.trace(clean_prompt):  # the failures left nothing behind
    after = model.lm_head.output[0, -1].save()

print(len(ioi_patching_results), len(ioi_patching_results[0]), len(handed))
