"""docs/usage/cache.md: a generation's cache holds one visit per step; its entry's ``len`` is the
step count, ``.output`` / ``.input`` list every step's value (``[0]`` is step 0's), reached by path
and by navigation alike; a module visited once reads as one value."""
import sys

from nnsight import LanguageModel
from transformers import AutoTokenizer

path = sys.argv[1]
model = LanguageModel(path, tokenizer=AutoTokenizer.from_pretrained(path))

with model.generate("Hello", max_new_tokens=3, min_new_tokens=3, do_sample=False) as tracer:
    cache = tracer.cache(modules=[model.model.layers[-1]], include_inputs=True)
    steps = list().save()
    for step in tracer.iter[:3]:
        steps.append(model.model.layers[-1].output)

entry = cache["model.model.layers.3"]
by_path, navigated = entry.output, cache.model.model.layers[3].output
print(len(entry), len(cache.model.model.layers[3]), type(by_path).__name__, [tuple(o.shape) for o in by_path])
print([tuple(i.shape) for i in entry.input], len(entry.inputs))
print([bool((a == b).all()) for a, b in zip(by_path, navigated)])
print([round(float((o - s).abs().max()), 4) for o, s in zip(by_path, steps)])
first = cache["model.model.layers.3"].output[0]  # step 0's tensor

with model.trace("Hello") as tracer:
    once = tracer.cache(modules=[model.model.layers[0]])
print(len(once["model.model.layers.0"]), tuple(once["model.model.layers.0"].output.shape))
