"""A generation ends at its end-of-sequence token before the steps a loop asks for: as on nnsight,
the loop is cut short at the first value of a step the run never made. What the body did before that
request stands; what it did from there on (appends, later values, saves after the loop) did not
happen. Prints each block's lists, dicts and which names exist afterwards.

    python eos_cut.py CHECKPOINT
"""
import sys

import nnsight
from transformers import AutoTokenizer

from nnsight import LanguageModel

path = sys.argv[1]
model = LanguageModel(path, tokenizer=AutoTokenizer.from_pretrained(path))
prompt = "Once upon a time"

with model.generate(prompt, max_new_tokens=6) as tracer:
    full = tracer.result.save()
new = full[0, -6:].tolist()
eos = new[2]  # the token of step 2: with it as end-of-sequence the run makes 3 steps (fewer if it came earlier)
print("tokens", new, "eos", eos)

with model.generate(prompt, max_new_tokens=6, eos_token_id=eos) as tracer:
    steps = nnsight.save([])
    argmax = nnsight.save([])
    norms = nnsight.save({})
    for step in tracer.all():
        steps.append(step)  # before the step's first value: runs for the step that is never made too
        norms[step] = model.model.layers[0].output[0].norm()
        argmax.append(model.lm_head.output[0, -1].argmax(dim=-1))
    after_loop = nnsight.save(model.lm_head.output.sum())
print("all:", steps, [int(a) for a in argmax], sorted(norms), "after_loop" in globals())

with model.generate(prompt, max_new_tokens=6, eos_token_id=eos) as tracer:
    bounded = nnsight.save([])
    for step in tracer.iter[1:6]:
        model.model.layers[1].output[:, -1] *= 1.0
        bounded.append(step)
    ids = tracer.result.save()
print("bounded:", bounded, "ids" in globals())

with model.generate(prompt, max_new_tokens=6, eos_token_id=eos) as tracer:
    made = nnsight.save([])
    for step in tracer.iter[0:2]:  # steps the run makes: nothing is cut
        made.append(model.lm_head.output[0, -1].argmax(dim=-1))
    result = tracer.result.save()
print("made:", [int(m) for m in made], result.shape[-1] - full.shape[-1] + 6)

# beam search: the search ends once no running beam can beat the finished ones; nothing is saved but
# a list of step numbers, so the model runs only because that list depends on the steps it makes
with model.generate(prompt, max_new_tokens=6, num_beams=2, eos_token_id=eos) as tracer:
    beam_steps = nnsight.save([])
    for step in tracer.all():
        beam_steps.append(step)
        hidden = model.model.layers[0].output
print("beam:", beam_steps)

# no model value saved: the model still runs (as on nnsight), since the list depends on the steps it makes
with model.generate(prompt, max_new_tokens=6, eos_token_id=eos) as tracer:
    only_steps = nnsight.save([])
    for step in tracer.all():
        only_steps.append(step)
        hidden = model.model.layers[0].output
print("only steps:", only_steps)
