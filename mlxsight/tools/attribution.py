"""Attribution patching: a linear estimate of every activation-patching cell from one backward pass.

For a cell (layer, position, head) with clean activation ``a_c`` and corrupted ``a_x``, patching
changes the metric by about ``dM/da (a_x) . (a_c - a_x)`` (first-order Taylor expansion around the
corrupted run). So one traced forward of the clean prompt (its activations) and one traced forward
and backward of the corrupted prompt (activations and gradients at every swept layer) give the
whole grid. ``scores`` holds ``corrupted + estimate``, the same quantity activation patching
measures, so ``normalized`` and the correlation between the two compare like with like.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from . import backend
from .metrics import bind, metric_name
from .patching import (COMPONENTS, Grid, PatchingResult, _scalar, activation_patching, aligned_ids,
                       read_site, token_strings)
from .standardize import Standardized, standardize


def attribution_patching(model: Any, clean: Any, corrupted: Any, metric: Callable[[Any], Any],
                         component: str = "resid", layers: Sequence[int] | None = None,
                         positions: Sequence[int] | None = None, heads: Sequence[int] | None = None,
                         compare: bool = False, progress: bool = True) -> PatchingResult:
    """Estimate ``activation_patching``'s grid from gradients (same arguments, same result type).

    ``method`` is ``"attribution"``. With ``compare=True`` activation patching also runs over the
    same cells and ``correlation`` holds the Pearson correlation of the two ``scores``. The metric
    must be differentiable (all of ``metrics`` are).
    """
    if component not in COMPONENTS:
        raise ValueError(f"component must be one of {COMPONENTS}, got {component!r}")
    std = standardize(model)
    clean_ids, corrupt_ids = aligned_ids(model, clean, corrupted)
    grid = Grid.make(std, component, len(clean_ids), layers, positions, heads)
    bar = _bar(2, progress, f"attribution patching ({component})")
    clean_acts, clean_logits, tuple_out = _clean_run(std, clean_ids, grid)
    bar.update()
    fn = bind(metric, clean_logits)
    clean_value = _scalar(fn(clean_logits))
    corrupt_acts, grads, corrupt_value = _gradient_run(std, corrupt_ids, grid, fn, tuple_out)
    bar.update()
    bar.close()

    scores = np.zeros(grid.shape, dtype=np.float32)
    for cell in grid.cells():
        layer = grid.layers[cell[0]]
        region = (0,) + grid.region(cell)
        delta = clean_acts[layer][region].astype(np.float64) - corrupt_acts[layer][region]
        scores[cell] = corrupt_value + float((grads[layer][region] * delta).sum())
    result = PatchingResult(
        scores=scores, clean=clean_value, corrupted=corrupt_value, layers=list(grid.layers),
        positions=None if grid.positions is None else list(grid.positions),
        heads=None if grid.heads is None else list(grid.heads), component=component,
        tokens=token_strings(model, clean_ids), metric=metric_name(metric), method="attribution")
    if compare:
        exact = activation_patching(model, clean_ids, corrupt_ids, metric, component=component,
                                    layers=grid.layers, positions=positions, heads=heads, progress=progress)
        result.correlation = correlation(result.scores, exact.scores)
    return result


def correlation(a: Any, b: Any) -> float:
    """Pearson correlation of two score grids (flattened)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(np.corrcoef(a, b)[0, 1])


def _clean_run(std: Standardized, ids: list[int], grid: Grid) -> tuple[dict[int, np.ndarray], Any, bool]:
    """The clean run's activations, last-position logits, and whether the component is a tuple's first member."""
    def read(m: Any) -> dict:
        acts = {}
        for layer in grid.layers:
            acts[layer] = read_site(std, grid.component, layer)
        return {"acts": acts, "last": backend.first(std.layers[-1].output)[:, -1]}

    run = backend.run(std.model, [ids], read)
    with backend.no_grad(std.model):
        logits = std.logits(run["last"])
    tuple_out = any(isinstance(v, (tuple, list)) for v in run["acts"].values())
    return {k: backend.to_numpy(backend.first(v), np.float64) for k, v in run["acts"].items()}, logits, tuple_out


def _gradient_run(std: Standardized, ids: list[int], grid: Grid, metric: Callable[[Any], Any],
                  tuple_out: bool) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray], float]:
    """The corrupted run's activations, d(metric)/d(activation) at each swept layer, and the metric."""
    model = std.model

    def read(m: Any) -> dict:
        acts = {}
        for layer in grid.layers:
            value = read_site(std, grid.component, layer)
            acts[layer] = value[0] if tuple_out else value
        logits = std.logits(backend.first(std.layers[-1].output)[:, -1])
        value = _call(model, metric, logits).sum()
        with value.backward():
            # gradients arrive in backward order: the last layer's first
            grads = {layer: acts[layer].grad for layer in sorted(grid.layers, reverse=True)}
        return {"acts": acts, "grads": grads, "value": value}

    run = backend.run(model, [ids], read, grad=True)
    acts = {k: backend.to_numpy(v, np.float64) for k, v in run["acts"].items()}
    grads = {k: backend.to_numpy(v, np.float64) for k, v in run["grads"].items()}
    return acts, grads, _scalar(run["value"])


def _call(model: Any, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` inside a trace: recorded on mlxsight proxies, run directly on nnsight's tensors."""
    if backend.kind(model) == backend.MLX:
        from .. import apply

        return apply(fn, *args)
    return fn(*args)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(total: int, enabled: bool, desc: str) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False)
