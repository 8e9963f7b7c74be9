"""NNsight(torch Sequential), as nnsight's walkthrough opens: reads, an in-place zeroing, a value
used inside the trace, and an out-of-order read caught."""
import torch
import torch.nn as nn

import nnsight
from nnsight import NNsight
from nnsight.intervention.interleaver import OutOfOrderError

torch.manual_seed(0)
net = nn.Sequential(nn.Linear(5, 10), nn.ReLU(), nn.Linear(10, 8), nn.LayerNorm(8), nn.GELU(), nn.Linear(8, 2))
model = NNsight(net)
x = torch.randn(3, 5)

with model.trace(x):
    first = model[0].output.save()
    width = nnsight.save(model[0].output.shape[-1])
    model[2].output[:, :4] = 0
    normed_in = model[3].input.save()
    out = model.output.save()

with model.trace(x):
    doubled = (model[0].output * 2).save()
    largest = model.output.argmax(dim=-1).save()

ordered = False
try:
    with model.trace(x):
        _ = model[2].output
        _ = model[0].output
except OutOfOrderError:
    ordered = True
assert ordered, "reading model[0] after model[2] is an OutOfOrderError on both backends"
