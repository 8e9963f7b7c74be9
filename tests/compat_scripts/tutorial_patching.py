"""The nnsight.net activation-patching tutorial's pattern (IOI style): a clean and a corrupted
prompt of equal length, each layer's residual at the last position patched from clean into
corrupted inside one trace per layer, the logit difference of two answer tokens saved."""
import sys

import nnsight
import torch
from nnsight import LanguageModel

model = LanguageModel(sys.argv[1] if len(sys.argv) > 1 else "openai-community/gpt2", device_map="auto",
                      dispatch=True)
clean = "When Tom and Sam went to the park, Sam gave a red ball to"
corrupted = "When Tom and Sam went to the park, Tom gave a red ball to"
tok = model.tokenizer
assert len(tok(clean).input_ids) == len(tok(corrupted).input_ids)
a, b = tok(" Tom").input_ids[0], tok(" Sam").input_ids[0]

with model.trace(clean):
    clean_states = nnsight.save([layer.output[:, -1] for layer in model.transformer.h])
    clean_logits = model.lm_head.output.save()

diffs = []
for i, layer in enumerate(model.transformer.h):
    with model.trace(corrupted):
        layer.output[:, -1] = clean_states[i]
        logits = model.lm_head.output[0, -1]
        diff = (logits[a] - logits[b]).save()
    diffs.append(diff)
results = torch.stack(diffs)
print("clean diff", float(clean_logits[0, -1, a] - clean_logits[0, -1, b]), "patched", results.tolist())
