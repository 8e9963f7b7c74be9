"""Every invoke turns a value into a Python number (docs/patterns/ablation.md's head sweep), with
prompts of different lengths and one invoke patched from another: nnsight computes them all in its
one forward, mlxsight each on the rows it needs."""
import sys

import nnsight
from nnsight import LanguageModel
from transformers import AutoTokenizer

model = LanguageModel(sys.argv[1], tokenizer=AutoTokenizer.from_pretrained(sys.argv[1]))
prompts = ["Once upon a time, the cat sat", "A dog", "The sun was hot and the sky was blue"]

with model.trace() as tracer:
    probs = nnsight.save({})
    with tracer.invoke(prompts[0]):
        donor = model.model.layers[0].output[:, -1, :]
        probs["baseline"] = model.lm_head.output[0, -1].softmax(-1)[7].item()
    for layer in range(len(model.model.layers)):
        for i, prompt in enumerate(prompts):
            with tracer.invoke(prompt):
                if i == 2 and layer >= 1:  # handed over at a later layer than it is read
                    model.model.layers[0].output  # parks past the donor's read (nnsight's rule for a writer)
                    model.model.layers[1].output[:, -1, :] = donor
                model.model.layers[layer].output[:, -1, 8 * i:8 * (i + 1)] = 0
                probs[layer, i] = model.lm_head.output[0, -1].softmax(-1)[7].item()
    with tracer.invoke(prompts[1]):
        last = model.lm_head.output[:, -1].save()

print(len(probs))
