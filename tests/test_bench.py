"""The bench's measured pairs do what they claim (the timings themselves live in the bench only)."""

import mlx.core as mx
import numpy as np
import pytest

from mlxsight import bench


@pytest.fixture
def torch_state():
    """The bench sets torch's process-wide grad mode and thread count for its own run: put them back."""
    import torch

    grad, threads = torch.is_grad_enabled(), torch.get_num_threads()
    yield
    torch.set_grad_enabled(grad)
    torch.set_num_threads(threads)


def test_overhead_pairs_compute_the_same_logits_on_both_libraries(torch_state):
    plain, traced = bench.overhead_pair_mlx()
    plain()
    ours = traced()
    nn_pair = bench.overhead_pair_nnsight()
    assert nn_pair is not None  # nnsight is a test dependency: the comparison must run
    nn_plain, nn_traced = nn_pair
    nn_plain()
    theirs = nn_traced()
    logits = theirs.logits if hasattr(theirs, "logits") else theirs
    np.testing.assert_allclose(np.array(ours), logits.detach().numpy(), rtol=1e-4, atol=1e-4)
    assert isinstance(ours, mx.array)
