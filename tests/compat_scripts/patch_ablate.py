"""Two invokes: patch the clean last-token residual into the corrupted run; ablate one MLP."""
import sys

import nnsight
from nnsight import LanguageModel
from transformers import AutoTokenizer

# a local checkpoint needs its tokenizer passed in (nnsight cannot infer the task offline)
model = LanguageModel(sys.argv[1], tokenizer=AutoTokenizer.from_pretrained(sys.argv[1]))
clean, corrupt = "The cat sat on the mat", "The dog ran in the park"

with model.trace() as tracer:
    barrier = tracer.barrier(2)  # both invokes touch layer 1: hand clean_h over explicitly
    with tracer.invoke(clean):
        clean_h = model.model.layers[1].output[:, -1, :].save()
        barrier()
        clean_logits = model.lm_head.output[:, -1, :].save()
    with tracer.invoke(corrupt):
        barrier()
        model.model.layers[1].output[:, -1, :] = clean_h
        patched_logits = model.lm_head.output[:, -1, :].save()

with model.trace(corrupt):
    model.model.layers[2].mlp.output[:] = 0
    ablated = nnsight.save(model.lm_head.output)

effect = (patched_logits - clean_logits).abs().max().item()
print(f"max |patched - clean| = {effect:.4g}")
