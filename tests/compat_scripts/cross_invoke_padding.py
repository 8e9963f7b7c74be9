"""One invoke's embeddings written into a longer invoke (docs/usage/barrier.md's pattern): nnsight
pads both to the batch, so the shorter invoke's values are as wide as the longer one's."""
import sys

from nnsight import LanguageModel
from transformers import AutoTokenizer

model = LanguageModel(sys.argv[1], tokenizer=AutoTokenizer.from_pretrained(sys.argv[1]))

with model.trace() as tracer:
    barrier = tracer.barrier(2)
    with tracer.invoke("A dog"):
        embeddings = model.model.embed_tokens.output
        short_embeddings = embeddings.save()
        barrier()
        short_h = model.model.layers[1].output.save()
    with tracer.invoke("Once upon a time, the cat sat on the mat"):
        barrier()
        model.model.embed_tokens.output = embeddings
        long_h = model.model.layers[1].output.save()
        long_logits = model.lm_head.output.save()

with model.trace() as tracer:  # an operation between the two invokes' values
    with tracer.invoke("A dog"):
        short = model.model.layers[0].output
    with tracer.invoke("Once upon a time, the cat sat on the mat"):
        difference = (model.model.layers[0].output - short).save()

print(tuple(short_embeddings.shape), tuple(long_h.shape))
