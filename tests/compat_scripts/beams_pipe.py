"""Beam search (the beams as rows, per step), the checkpoint's generation config, a stop in one
invoke with a sibling served that step, and pipe's records, written for nnsight 0.8.1."""
import sys
import warnings

import nnsight
import torch
from nnsight.modeling.transformers import TransformersModel
from transformers import AutoTokenizer

path = sys.argv[1]
model = TransformersModel(path, task="text-generation", tokenizer=AutoTokenizer.from_pretrained(path))
PROMPT = "The quick brown fox"

with model.generate(PROMPT, max_new_tokens=4, num_beams=3, do_sample=False) as tracer:
    beam_hidden = list().save()
    for step in tracer.iter[:4]:
        beam_hidden.append(model.model.layers[1].output)
    beam_ids = tracer.result.save()
assert [h.shape[0] for h in beam_hidden] == [3, 3, 3, 3]

with model.generate(max_new_tokens=3, num_beams=2, num_return_sequences=2, do_sample=False,
                    length_penalty=0.5) as tracer:
    with tracer.invoke(["Hello, world!", "Once upon a time"]):
        batch_logits = model.lm_head.output.save()
    with tracer.invoke():
        batch_ids = tracer.result.save()

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    with model.generate(max_new_tokens=6, do_sample=False) as tracer:
        with tracer.invoke(PROMPT):
            stopping = nnsight.save([])
            for _ in tracer.all():
                stopping.append(model.lm_head.output[0, -1].argmax(dim=-1))
                if len(stopping) == 2:
                    tracer.stop()
        with tracer.invoke("Once upon a time"):
            sibling = nnsight.save([])
            for _ in tracer.all():
                sibling.append(model.lm_head.output[0, -1].argmax(dim=-1))
assert len(stopping) == len(sibling) == 2
assert any("never reached" in str(w.message) for w in caught)
stopped = torch.stack(stopping + sibling)

with model.pipe([PROMPT, "Hello, world!"], max_new_tokens=4, do_sample=False) as tracer:
    records = tracer.result.save()
texts = [r[0]["generated_text"] for r in records]
assert texts[0].startswith(PROMPT)
pipe_ids = torch.tensor([len(model.tokenizer(t)["input_ids"]) for t in texts])
print(texts)
