"""A trace that reads a generator object: cloudpickle cannot ship it, so NDIF cannot run it."""
import sys

from nnsight import LanguageModel
from transformers import AutoTokenizer

model = LanguageModel(sys.argv[1], tokenizer=AutoTokenizer.from_pretrained(sys.argv[1]))
layers = (i for i in range(2))

with model.trace("The cat sat", remote=True):
    h = model.model.layers[next(layers)].output.save()

print(tuple(h.shape))
