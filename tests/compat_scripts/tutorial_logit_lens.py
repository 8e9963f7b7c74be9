"""The nnsight.net logit-lens tutorial's pattern on a hub id (GPT-2 layout): per-layer probabilities
appended to a list made before the trace, stacked with torch afterwards."""
import sys

import torch
from nnsight import LanguageModel

model = LanguageModel(sys.argv[1] if len(sys.argv) > 1 else "openai-community/gpt2", device_map="auto",
                      dispatch=True)
prompt = "The Eiffel Tower is in the city of"
probs_layers = []
with model.trace(prompt):
    for layer in model.transformer.h:
        logits = model.lm_head(model.transformer.ln_f(layer.output))
        probs_layers.append(torch.nn.functional.softmax(logits, dim=-1).save())
    final = model.lm_head.output.save()
probs = torch.cat([p[:, -1] for p in probs_layers])  # [layers, vocab]
top_probs, top_tokens = probs.max(dim=-1)
print([model.tokenizer.decode(int(t)) for t in top_tokens], model.config.n_layer)
