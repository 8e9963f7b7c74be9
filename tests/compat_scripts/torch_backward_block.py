"""`with loss.backward():` on plain torch tensors outside any trace (nnsight patches torch's
backward on import; docs/usage/backward-and-grad.md), next to a bare `.backward()`."""
import nnsight  # noqa: F401 - importing nnsight patches torch.Tensor.backward
import torch

x = torch.tensor([2.0, 3.0], requires_grad=True)
loss = (x * x).sum()
with loss.backward():
    g = x.grad.save()
    g2 = nnsight.save(x.grad)
print("block", g.tolist(), g2.tolist())
y = torch.tensor([1.0, 2.0], requires_grad=True)
h = y * y
h.retain_grad()
print("bare", (h * 3).sum().backward(), y.grad.tolist(), h.grad.tolist())
try:
    with torch.tensor([1.0]).sum().backward():
        pass
except NotImplementedError as e:
    print("refused", str(e).split(":")[0])
