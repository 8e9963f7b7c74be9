"""nnsight's deprecated block form: `with tracer.iter[...]:` runs its body once per step."""
import sys

import nnsight
from nnsight.modeling.transformers import TransformersModel
from transformers import AutoTokenizer

path = sys.argv[1]
model = TransformersModel(path, task="text-generation", tokenizer=AutoTokenizer.from_pretrained(path))


def per_step():
    with model.generate("Once upon a time", max_new_tokens=3, do_sample=False) as tracer:
        hidden = nnsight.save([])
        with tracer.iter[:3]:
            hidden.append(model.model.layers[0].output)
    return hidden


hidden = per_step()
with model.generate("Once upon a time", max_new_tokens=3, do_sample=False) as tracer:
    box = nnsight.save({})
    with tracer.iter[1]:
        box["second"] = model.lm_head.output
print(len(hidden), box["second"].shape)
