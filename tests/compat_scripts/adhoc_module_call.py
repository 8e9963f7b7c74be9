"""docs/developing/extending.md #2: an NNsight subclass's method runs a later module ad hoc on a
value read in the trace (a logit lens); seeded, so both backends build the same weights and input."""
import torch
from nnsight import NNsight

torch.manual_seed(0)


class MyModel(NNsight):
    def logit_lens(self, hidden):
        return self[1](hidden)  # run a later module ad hoc


model = MyModel(torch.nn.Sequential(torch.nn.Linear(5, 10), torch.nn.Linear(10, 2)))
with model.trace(torch.rand(1, 5)):
    h0 = model[0].output
    lens = model.logit_lens(h0).save()
    hidden = model[0].output.save()
