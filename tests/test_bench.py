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


def test_the_low_quantile_overhead_finds_a_known_offset_under_heavy_tailed_waits():
    """Synthetic timings (no clock): a 0.1 ms offset under waits far larger than it, as a loaded
    machine adds. The low-quantile estimate's interval holds the offset and is narrower than the
    median difference's."""
    rng = np.random.default_rng(1)
    result = bench.Overhead()
    for _ in range(2000):
        waits = rng.exponential(2e-3, 2)  # every run waits, 2 ms on average: 20 times the offset
        result.add(1e-3 + waits[0], 1.1e-3 + waits[1])
    lo, hi = result.low_interval()
    assert lo <= 1e-4 <= hi and hi - lo < 1e-4
    m_lo, m_hi = result.interval()
    assert hi - lo < (m_hi - m_lo) / 2
