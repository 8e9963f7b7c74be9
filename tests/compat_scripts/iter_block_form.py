"""nnsight's deprecated block form: `with tracer.iter[...]:` runs its body once per step; an open
one (`with tracer.all():`, `with tracer.iter[:]:`) waits for a step the run never makes, so the
code after it in that invoke does not run, as after an open `for` loop."""
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

for form in ("all", "iter"):
    with model.generate("Once upon a time", max_new_tokens=3, do_sample=False) as tracer:
        norms = nnsight.save([])
        if form == "all":
            with tracer.all():
                norms.append(model.model.layers[0].output.norm())
        else:
            with tracer.iter[:]:
                norms.append(model.model.layers[0].output.norm())
        after = tracer.result.save()  # not run: the open block ended the invoke
    print(form, len(norms), "after" in globals())
print(len(hidden), box["second"].shape)
