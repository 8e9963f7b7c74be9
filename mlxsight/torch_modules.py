"""torch modules in mlxsight: ``NNsight(torch_module)`` mirrors one in MLX; one attached to a traced
model runs as it is (``TorchKind``).

``NNsight(torch_module)``: a torch module built from standard layers, mirrored in MLX.

nnsight wraps any torch module and runs its forward. mlxsight runs MLX, so it wraps a mirror: the
same tree under the same child names (``model[0]``, ``model.fc1`` address the same layers), the
same parameters (copied once), the same forward, for the layers in ``MIRRORS``. A module outside
that set (one with its own ``forward``) is refused with a ``TypeError`` naming it: its forward is
torch code that MLX cannot run. Imported only when a torch module is passed (torch is loaded then).
"""

from __future__ import annotations

from typing import Any, Callable

import mlx.core as mx
import mlx.nn as nn
import numpy as np


class Sequential(nn.Module):
    """torch's ``nn.Sequential``: children under torch's names (``"0"``, ``"1"``, ... or those of
    the ``OrderedDict`` it was built from), called in order."""

    def __init__(self, layers: list[tuple[str, nn.Module]]) -> None:
        super().__init__()
        for name, layer in layers:
            self[name] = layer
        self._order = [name for name, _ in layers]

    def __call__(self, x: Any) -> Any:
        for name in self._order:
            x = self[name](x)
        return x


class Softmax(nn.Module):
    def __init__(self, dim: int | None) -> None:
        super().__init__()
        self._dim = -1 if dim is None else dim

    def __call__(self, x: mx.array) -> mx.array:
        return mx.softmax(x, axis=self._dim, precise=True)


class Flatten(nn.Module):
    def __init__(self, start_dim: int, end_dim: int) -> None:
        super().__init__()
        self._start, self._end = start_dim, end_dim

    def __call__(self, x: mx.array) -> mx.array:
        return mx.flatten(x, self._start, self._end)


def _array(tensor: Any) -> mx.array:
    return mx.array(tensor.detach().cpu().float().numpy().astype(np.float32))


def _linear(m: Any) -> nn.Module:
    out = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
    out.weight = _array(m.weight)  # torch and MLX both store [out_features, in_features]
    if m.bias is not None:
        out.bias = _array(m.bias)
    return out


def _layer_norm(m: Any) -> nn.Module:
    if len(m.normalized_shape) != 1:
        raise TypeError(f"LayerNorm over {tuple(m.normalized_shape)}: only the last dimension is mirrored")
    out = nn.LayerNorm(m.normalized_shape[0], eps=m.eps, affine=m.elementwise_affine,
                       bias=m.elementwise_affine and m.bias is not None)
    if m.elementwise_affine:
        out.weight = _array(m.weight)
        if m.bias is not None:
            out.bias = _array(m.bias)
    return out


def _embedding(m: Any) -> nn.Module:
    out = nn.Embedding(m.num_embeddings, m.embedding_dim)
    out.weight = _array(m.weight)
    return out


def _gelu(m: Any) -> nn.Module:
    return nn.GELU(approx="precise" if m.approximate == "tanh" else "none")


# torch class name -> its MLX mirror (the same forward)
MIRRORS: dict[str, Callable[[Any], nn.Module]] = {
    "Linear": _linear,
    "LayerNorm": _layer_norm,
    "Embedding": _embedding,
    "ReLU": lambda m: nn.ReLU(),
    "GELU": _gelu,
    "Tanh": lambda m: nn.Tanh(),
    "Sigmoid": lambda m: nn.Sigmoid(),
    "SiLU": lambda m: nn.SiLU(),
    "Identity": lambda m: nn.Identity(),
    "Dropout": lambda m: nn.Dropout(m.p),
    "Softmax": lambda m: Softmax(m.dim),
    "Flatten": lambda m: Flatten(m.start_dim, m.end_dim),
}


def mirror(module: Any) -> nn.Module:
    """The MLX mirror of a torch ``module`` (``nn.Sequential`` of the layers in ``MIRRORS``, nested).

    ``TypeError`` names the first module that cannot be mirrored."""
    import torch

    if type(module) is torch.nn.Sequential:
        out: nn.Module = Sequential([(name, mirror(child)) for name, child in module.named_children()])
    elif type(module).__module__.startswith("torch.nn.modules") and type(module).__name__ in MIRRORS:
        out = MIRRORS[type(module).__name__](module)
    else:
        raise TypeError(
            f"NNsight wraps MLX modules; the torch module {type(module).__name__} cannot be mirrored in MLX "
            f"(mlxsight mirrors nn.Sequential of {', '.join(sorted(MIRRORS))}; a module with its own "
            f"forward is torch code MLX cannot run). Build it in MLX, load a checkpoint with "
            f"mlxsight.LanguageModel, or run the script on nnsight: `python -m compat run --backend nnsight SCRIPT`")
    out.train(module.training)  # dropout follows the torch module's mode, as nnsight runs it
    return out


# ----------------------------------------------------------------------------------------------
# torch modules attached to a traced model, run as they are (``auxiliary.ForeignCall``)

class TorchKind:
    """``auxiliary.ForeignKind`` of ``torch.nn.Module``: torch runs the module on torch copies of the
    values; an observed module reports its calls through a ``forward`` set on the instance for the
    call's duration (removed on every exit path), so its own hooks still fire as in torch."""

    def children(self, module: Any) -> dict[str, Any]:
        return dict(module.named_children())

    def call(self, module: Any, method: str | None, args: tuple, kwargs: dict,
             paths: dict[int, str], observer: Any) -> Any:
        import torch

        from .torch_ops import to_mlx, to_torch

        patched: list[tuple[Any, Any]] = []
        try:
            for sub in module.modules():
                path = paths.get(id(sub))
                if path is not None:
                    patched.append((sub, sub.__dict__.get("forward")))
                    sub.forward = _observed(sub.forward, path, observer)
            fn = getattr(module, method) if method else module
            with torch.no_grad():
                return to_mlx(fn(*to_torch(args), **to_torch(kwargs)))
        finally:
            for sub, own in reversed(patched):
                if own is None:
                    del sub.forward
                else:
                    sub.forward = own


def _observed(forward: Callable, path: str, observer: Any) -> Callable:
    """``forward`` reporting each call to ``observer`` as a call of ``path``, with MLX values."""
    from .torch_ops import to_mlx, to_torch

    def body(*args: Any, **kwargs: Any) -> Any:
        return to_mlx(forward(*to_torch(args), **to_torch(kwargs)))

    def observed(*args: Any, **kwargs: Any) -> Any:
        return to_torch(observer.on_op(path, body, to_mlx(args), to_mlx(kwargs)))

    return observed


TORCH_KIND = TorchKind()
