"""Reading a later layer before an earlier one in one invoke: nnsight raises OutOfOrderError."""
import sys

from nnsight.intervention.interleaver import OutOfOrderError
from nnsight.modeling.transformers import TransformersModel
from transformers import AutoTokenizer

path = sys.argv[1]
model = TransformersModel(path, task="text-generation", tokenizer=AutoTokenizer.from_pretrained(path))
try:
    with model.trace("Once upon a time"):
        late = model.model.layers[2].output.save()
        early = model.model.layers[0].output.save()
    print("no error")
except OutOfOrderError as e:
    print("caught OutOfOrderError:", "model.model.layers.0.output" in str(e))
with model.trace("Once upon a time"):
    early = model.model.layers[0].output.save()
    late = model.model.layers[2].output.save()
