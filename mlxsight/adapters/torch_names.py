"""torch's names for the torch calls transformers' attention code makes, run on MLX arrays.

An HF-view forward written as transformers writes it (``torch.matmul(...)``,
``nn.functional.softmax(..., dim=-1)``) exposes the same ``.source`` operations as transformers'
(``torch_matmul_0``, ``nn_functional_softmax_0``), because an operation is named after the
expression it calls. The functions are ``mlxsight.torch_ops``'s: torch's signatures and semantics.
"""

from __future__ import annotations

from types import SimpleNamespace

import mlx.core as mx

from .. import torch_ops

torch = SimpleNamespace(matmul=torch_ops.matmul, float32=mx.float32)
nn = SimpleNamespace(functional=SimpleNamespace(softmax=torch_ops.softmax, dropout=torch_ops.dropout))
