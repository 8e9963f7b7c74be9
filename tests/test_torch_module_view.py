"""Under compat, ``model._module`` is a ``torch.nn.Module`` view of the MLX module. The script
``compat_scripts/torch_module_view.py`` asserts it against transformers on the same checkpoint
(hooks see and replace the same values, ``generate`` gives the same ids) and runs on real nnsight
too, so what it expects is nnsight's behaviour."""

from __future__ import annotations

import pytest

from test_conformance_causes import SCRIPTS, run
from tiny_models import cached_checkpoint


@pytest.mark.parametrize("backend", ["mlx", pytest.param("nnsight", marks=pytest.mark.slow)])
def test_the_wrapped_module_is_a_torch_module_on_both_backends(backend):
    proc = run("-m", "compat", "run", "--backend", backend, str(SCRIPTS / "torch_module_view.py"),
               str(cached_checkpoint("gpt2")))
    assert proc.returncode == 0 and "VIEW OK" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
