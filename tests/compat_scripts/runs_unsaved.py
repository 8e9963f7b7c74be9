"""A generation block saves nothing, yet the caller sees its run (nnsight always runs the model):
a streamer gets the prompt, each step's tokens and the end. Prints what the streamer got.

    python runs_unsaved.py CHECKPOINT
"""
import sys

from transformers import AutoTokenizer

from nnsight import LanguageModel

path = sys.argv[1]
model = LanguageModel(path, tokenizer=AutoTokenizer.from_pretrained(path))


class Streamer:
    def __init__(self):
        self.puts = []

    def put(self, ids):
        self.puts.append(ids.reshape(-1).tolist())

    def end(self):
        self.puts.append("end")


steered = Streamer()
with model.generate("Once upon a time", max_new_tokens=4, streamer=steered):
    model.model.layers[1].output[:, -1] += 1.0   # an edit, nothing saved
print("steered, nothing saved:", steered.puts)

empty = Streamer()
with model.generate("Once upon a time", max_new_tokens=4, streamer=empty):
    pass
print("empty body:", empty.puts)

