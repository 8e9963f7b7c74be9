"""Activation patching: which layer, position (and head) carries the difference between two prompts.

``activation_patching(model, clean, corrupted, metric)`` runs the corrupted prompt with one
activation replaced by the clean prompt's, for every cell of a layers x positions (x heads) grid,
and records the metric of each patched run.

How it is fast, with the values of a loop of one patched trace per cell:

- One traced forward (the two prompts as two invokes) stores what every cell needs: the clean activations, and the
  corrupted run's residual stream entering each layer.
- A patched run that starts at layer ``l`` does not recompute layers ``0..l-1``: those layers are
  skipped (``envoy.skip``) with the stored corrupted residual as their output.
- On MLX it does not recompute the positions before its first patched one either: those are the
  corrupted run's at every layer, so the run continues the corrupted run's KV cache (filled by the
  baseline trace; ``model.trace(..., past_key_values=...)``) over positions ``p..T-1`` only. A
  last-position sweep runs one position per row. nnsight models, and forwards patching position 0
  or every position (``heads`` with ``positions=None``), run every position.
- Cells run as rows of one batched forward: all positions (and heads) of a layer together, and
  consecutive layers together when the per-trace overhead outweighs the compute that costs
  (small models, few rows); both costs are measured on the model (fitted to its recent patched
  forwards). A row patched at a later layer of its forward carries the corrupted values until
  then; the patch is exact arithmetic (``x * keep + patch`` with 0/1 ``keep``), so untouched
  rows and positions pass through bit for bit.
- A cell whose clean and corrupted activations are identical (e.g. positions before the first
  differing token) is the corrupted run itself: its score is the corrupted baseline, not rerun.

Prompts must have the same number of tokens (position ``i`` must mean the same place in both);
prompts of different lengths are rejected with the two tokenizations, never padded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import time
import weakref

import mlx.core as mx
import numpy as np

from . import backend
from .inputs import token_ids, token_strings
from .metrics import bind, metric_name
from .result import Result
from .standardize import Standardized, standardize

COMPONENTS = ("resid", "attn", "mlp", "heads")
OUT_PROJ = ("o_proj", "c_proj", "dense", "out_proj")  # an attention block's output projection


@dataclass(repr=False)
class PatchingResult(Result):
    """The metric of each patched run, on a layers x positions (x heads) grid.

    Fields:
        scores: the raw metric of each patched run. ``[n_layers, n_positions]`` for ``resid``,
            ``attn`` and ``mlp``; for ``heads``, ``[n_layers, n_heads]`` (each head patched at all
            positions at once, ``positions=None``) or ``[n_layers, n_positions, n_heads]``.
        clean, corrupted: the metric of the unpatched clean and corrupted runs.
        layers: decoder layer index of each row of ``scores``.
        positions: token position of each column (``None``: heads patched at every position).
        heads: head index of the last axis (``heads`` only, else ``None``).
        component: ``"resid"`` (the residual stream entering the layer), ``"attn"`` (the attention
            block's output), ``"mlp"`` (the MLP block's output) or ``"heads"`` (each head's slice of
            the input of the attention output projection).
        tokens: the clean prompt's tokens as strings.
        metric: the metric's name.
        method: ``"activation"`` (each cell run) or ``"attribution"`` (linear estimate from one
            backward pass: ``corrupted + gradient . (clean - corrupted)``).
        correlation: for attribution results computed with ``compare=True``, the Pearson
            correlation of ``scores`` with activation patching's over the same cells.
    """

    scores: np.ndarray
    clean: float
    corrupted: float
    layers: list[int]
    positions: list[int] | None
    heads: list[int] | None
    component: str
    tokens: list[str]
    metric: str
    method: str = "activation"
    correlation: float | None = None

    @property
    def normalized(self) -> np.ndarray:
        """``(scores - corrupted) / (clean - corrupted)``: 1 = the patch restores the clean metric."""
        return (self.scores - self.corrupted) / (self.clean - self.corrupted)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.scores if dtype is None else self.scores.astype(dtype)


def activation_patching(model: Any, clean: Any, corrupted: Any, metric: Callable[[Any], Any],
                        component: str = "resid", layers: Sequence[int] | None = None,
                        positions: Sequence[int] | None = None, heads: Sequence[int] | None = None,
                        batch_size: int = 64, progress: bool = True) -> PatchingResult:
    """Patch each clean activation into the corrupted run; return the metric of every patched run.

    ``model`` is an mlxsight model or an nnsight ``LanguageModel``. ``clean``/``corrupted`` are
    prompts (str) or token ids of equal length. ``metric`` maps the last position's logits
    (``[rows, vocab]``, a backend tensor) to one value per row: ``logit_diff(good, bad)``,
    ``probability(id)``, ``kl_div()`` or your own (see ``metrics``). ``layers``, ``positions`` and
    ``heads`` default to all (negative indices count from the end); for ``component="heads"``,
    ``positions=None`` patches each head at every position at once. ``batch_size`` caps the rows of
    one forward; ``progress=False`` hides the progress bar.
    """
    if component not in COMPONENTS:
        raise ValueError(f"component must be one of {COMPONENTS}, got {component!r}")
    std = standardize(backend.loaded(model))
    clean_ids, corrupt_ids = aligned_ids(model, clean, corrupted)
    grid = Grid.make(std, component, len(clean_ids), layers, positions, heads)

    start = time.perf_counter()
    clean_run, corrupt_run = _baselines(std, clean_ids, corrupt_ids, grid)
    baseline_seconds = time.perf_counter() - start
    fn = bind(metric, clean_run.logits)
    clean_value = _scalar(fn(clean_run.logits))
    corrupt_value = _scalar(fn(corrupt_run.logits))

    scores = np.full(grid.shape, np.nan, dtype=np.float32)
    todo = []
    for cell in grid.cells():
        region = grid.region(cell)
        layer = grid.layers[cell[0]]
        if np.array_equal(clean_run.acts[layer][(0,) + region], corrupt_run.acts[layer][(0,) + region]):
            scores[cell] = corrupt_value  # patching an identical value is the corrupted run itself
        else:
            todo.append(cell)

    history = _history(std.model)

    def run(rows: list) -> None:
        start = time.perf_counter()
        values = _patched_forward(std, grid, rows, corrupt_ids, clean_run, corrupt_run, fn)
        for cell, value in zip(rows, values):
            scores[cell] = value
        depth = std.n_layers - min(grid.layers[cell[0]] for cell in rows)
        tokens = len(corrupt_ids) - (first_patched(grid, rows) if corrupt_run.kv is not None else 0)
        history.append((len(rows) * depth * tokens, time.perf_counter() - start))
        del history[:-HISTORY_SIZE]

    several_layers = len({cell[0] for cell in todo}) > 1
    costs = _costs(std, corrupt_ids, corrupt_run, baseline_seconds) if several_layers else (0.0, 1.0)
    forwards = _plan(grid, todo, batch_size, std.n_layers, costs, cached=corrupt_run.kv is not None)
    bar = _bar(progress, f"activation patching ({component})", total=len(forwards))
    for rows in forwards:
        run(rows)
        bar.update()
    bar.close()
    return PatchingResult(
        scores=scores, clean=clean_value, corrupted=corrupt_value, layers=list(grid.layers),
        positions=None if grid.positions is None else list(grid.positions),
        heads=None if grid.heads is None else list(grid.heads), component=component,
        tokens=token_strings(model, clean_ids), metric=metric_name(metric))


# -- inputs ---------------------------------------------------------------------------------------

def aligned_ids(model: Any, clean: Any, corrupted: Any) -> tuple[list[int], list[int]]:
    """Token ids of both prompts; a ``ValueError`` showing both tokenizations if their lengths differ."""
    a, b = token_ids(model, clean), token_ids(model, corrupted)
    if len(a) != len(b):
        ta, tb = token_strings(model, a), token_strings(model, b)
        first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        raise ValueError(
            f"the clean prompt has {len(a)} tokens and the corrupted one {len(b)}: patching copies position i "
            f"of one run into position i of the other, so both need the same length (they are never padded, "
            f"which would shift every later position). They first differ at position {first}:\n"
            f"  clean:     {ta[first:first + 6]}\n  corrupted: {tb[first:first + 6]}\n"
            "Choose substitutions with the same number of tokens, or pass token ids you aligned yourself.")
    return a, b


# -- the grid of cells ------------------------------------------------------------------------------

@dataclass
class Grid:
    """Which cells a sweep covers and where each one's patch lies in an activation."""

    component: str
    layers: list[int]
    positions: list[int] | None
    heads: list[int] | None
    d_head: int
    n_tokens: int

    @classmethod
    def make(cls, std: Standardized, component: str, n_tokens: int, layers: Sequence[int] | None,
             positions: Sequence[int] | None, heads: Sequence[int] | None) -> "Grid":
        layer_list = _indices(layers, std.n_layers, "layer")
        pos_list = _indices(positions, n_tokens, "position")
        if component == "heads":
            head_list = _indices(heads, std.n_heads, "head")
            if positions is None:
                pos_list = None
        else:
            if heads is not None:
                raise ValueError(f"heads= applies to component='heads' only, not {component!r}")
            head_list = None
        return cls(component, layer_list, pos_list, head_list, std.d_head, n_tokens)

    @property
    def shape(self) -> tuple[int, ...]:
        dims = [len(self.layers)]
        if self.positions is not None:
            dims.append(len(self.positions))
        if self.heads is not None:
            dims.append(len(self.heads))
        return tuple(dims)

    def cells(self) -> list[tuple[int, ...]]:
        return [tuple(int(i) for i in c) for c in np.ndindex(*self.shape)]

    def region(self, cell: tuple[int, ...]) -> tuple[Any, Any]:
        """The ``(position, feature)`` index of a cell's patch in a ``[T, width]`` activation."""
        pos: Any = slice(None) if self.positions is None else self.positions[cell[1]]
        if self.heads is None:
            return pos, slice(None)
        h = self.heads[cell[-1]]
        return pos, slice(h * self.d_head, (h + 1) * self.d_head)


def _indices(given: Sequence[int] | None, n: int, what: str) -> list[int]:
    if given is None:
        return list(range(n))
    out = []
    for i in given:
        j = int(i) + n if int(i) < 0 else int(i)
        if not 0 <= j < n:
            raise IndexError(f"{what} {i} out of range: there are {n}")
        out.append(j)
    return out


def _plan(grid: Grid, cells: list[tuple[int, ...]], batch_size: int, n_layers: int,
          costs: tuple[float, float], cached: bool = False) -> list[list[tuple[int, ...]]]:
    """Cells into forwards of at most ``batch_size`` rows, grouping consecutive layers when that is cheaper.

    A forward starting at layer ``a`` costs ``overhead + per_row_layer * rows * (n_layers - a)``
    (``costs``, measured), times the share of positions it runs (``cached``: from its first
    patched position on): a row patched at a later layer of a shared forward recomputes the layers
    in between, which pays off only while a trace's fixed overhead outweighs that compute. The
    cheapest grouping is found by dynamic programming over the layers in order."""
    by_layer: dict[int, list] = {}
    for cell in cells:
        by_layer.setdefault(grid.layers[cell[0]], []).append(cell)
    layers = sorted(by_layer)
    overhead, per_row_layer = costs
    # best[j]: the cheapest plan for layers[:j]; cut[j]: where its last forward starts
    best, cut = [0.0] + [float("inf")] * len(layers), [0] * (len(layers) + 1)
    T = grid.n_tokens
    first = {layer: first_patched(grid, group) if cached else 0 for layer, group in by_layer.items()}
    for j in range(1, len(layers) + 1):
        rows, start = 0, T
        for i in range(j - 1, -1, -1):
            rows += len(by_layer[layers[i]])
            start = min(start, first[layers[i]])
            if rows > batch_size and i < j - 1:
                break
            n_forwards = -(-rows // batch_size)
            share = (T - start) / T
            cost = best[i] + n_forwards * overhead + per_row_layer * rows * (n_layers - layers[i]) * share
            if cost < best[j]:
                best[j], cut[j] = cost, i
    forwards: list[list] = []
    j = len(layers)
    while j > 0:
        i = cut[j]
        group = [cell for layer in layers[i:j] for cell in by_layer[layer]]
        forwards[:0] = [group[k:k + batch_size] for k in range(0, len(group), batch_size)]
        j = i
    return forwards


# Per model: seconds of a trace that skips every layer, and (row-layer-tokens, seconds) of recent
# patched forwards, from which the planner fits this model's fixed and per-row costs.
_PROBE: "weakref.WeakKeyDictionary[Any, float]" = weakref.WeakKeyDictionary()
_HISTORY: "weakref.WeakKeyDictionary[Any, list]" = weakref.WeakKeyDictionary()
HISTORY_SIZE = 64


def _history(model: Any) -> list:
    try:
        return _HISTORY.setdefault(model, [])
    except TypeError:  # not hashable or not weakly referenceable: nothing is remembered
        return []


def _costs(std: Standardized, ids: list[int], corrupt: "Baseline", t_base: float) -> tuple[float, float]:
    """(fixed seconds per traced forward, seconds per row per decoder layer) for a prompt of ``ids``.

    Fitted (least squares, ``t = fixed + per_token * rows * layers * tokens``) to this model's recent
    patched forwards when they did different amounts of work; before that, the fixed part is a trace
    that skips every layer (timed once per model) and the per-row part the baseline trace (two rows
    through every layer) less that."""
    n_tokens = len(ids)
    samples = _history(std.model)
    works = np.array([w for w, _ in samples], dtype=np.float64)
    if len(set(works.tolist())) >= 2:
        per_token, fixed = np.polyfit(works, np.array([t for _, t in samples]), 1)
        if per_token > 0 and fixed >= 0:
            return float(fixed), float(per_token) * n_tokens
    try:
        overhead = _PROBE.get(std.model)
    except TypeError:
        overhead = None
    if overhead is None:
        value = backend.from_numpy(std.model, corrupt.resid[0], like=corrupt.like)

        def read(m: Any) -> Any:
            for layer in std.layers:
                layer.skip(value)
            return backend.first(std.layers[-1].output)[:, -1]

        start = time.perf_counter()
        last = backend.run(std.model, [ids], read)
        with backend.no_grad(std.model):
            backend.to_numpy(std.logits(last))
        overhead = time.perf_counter() - start
        try:
            _PROBE[std.model] = overhead
        except TypeError:
            pass
    return overhead, max(t_base - overhead, 0.0) / (2 * std.n_layers)


# -- running ----------------------------------------------------------------------------------------

@dataclass
class Baseline:
    """One unpatched run: per layer the swept activation and the residual entering it (numpy,
    ``[1, T, width]``), the last position's logits (backend tensor), and the output structure."""

    acts: dict[int, np.ndarray]
    resid: dict[int, np.ndarray]
    logits: Any
    like: Any  # a backend tensor of the activations' dtype and device
    tuple_out: bool
    kv: list | None = None  # per layer (keys, values) [1, heads, T, d_head] of this run (MLX only)


def site(std: Standardized, component: str, layer: int) -> Any:
    """The envoy whose value a component is, and whether it is the module's input."""
    if component == "resid":
        return std.layers[layer], "input"
    if component == "attn":
        return std.attention[layer], "output"
    if component == "mlp":
        return std.mlp[layer], "output"
    attn = std.attention[layer]
    for name in OUT_PROJ:
        proj = getattr(attn, name, None)
        if proj is not None:
            return proj, "input"
    raise ValueError(f"component='heads' needs the attention output projection: none of {OUT_PROJ} on "
                     f"{std.paths['layers']}.{layer}.{std.paths['attention']}")


def read_site(std: Standardized, component: str, layer: int) -> Any:
    envoy, kind = site(std, component, layer)
    return getattr(envoy, kind)


def edit_site(std: Standardized, component: str, layer: int, fn: Callable[[Any], Any], tuple_out: bool) -> None:
    """Replace a component's value ``x`` by ``fn(x)`` (the first member of a tuple output)."""
    envoy, kind = site(std, component, layer)
    value = getattr(envoy, kind)
    if kind == "output" and tuple_out:
        setattr(envoy, kind, (fn(value[0]),) + tuple(value[i] for i in range(1, len(value))))
    else:
        setattr(envoy, kind, fn(value))


def _baselines(std: Standardized, clean_ids: list[int], corrupt_ids: list[int], grid: Grid) -> tuple[Baseline, Baseline]:
    """Both unpatched runs, as two invokes of one trace."""
    model = std.model
    wanted = set(grid.layers)
    last_needed = max(grid.layers)

    def read() -> dict:
        out: dict = {"resid": {}, "acts": {}}
        for layer in range(last_needed + 1):
            out["resid"][layer] = std.layers[layer].input
            if layer in wanted and grid.component != "resid":
                out["acts"][layer] = read_site(std, grid.component, layer)
        out["last"] = backend.first(std.layers[-1].output)[:, -1]
        return out

    # On MLX the trace also fills a KV cache: the corrupted run's keys and values, which patched
    # runs continue instead of recomputing the positions before their patch.
    cache = _empty_cache(std)
    kw = {} if cache is None else {"past_key_values": cache}
    with backend.no_grad(model):
        with model.trace() as tracer:
            with tracer.invoke([clean_ids], **kw):
                clean = backend.save(model, read())
            with tracer.invoke([corrupt_ids], **kw):
                corrupt = backend.save(model, read())
    kv = None if cache is None else [(c.keys[1:2, :, :c.offset], c.values[1:2, :, :c.offset]) for c in cache]
    return _as_baseline(std, clean, wanted), _as_baseline(std, corrupt, wanted, kv)


def _empty_cache(std: Standardized) -> list | None:
    """Fresh KV caches to fill in the baseline trace, where patched runs can continue one (MLX)."""
    if std.backend != backend.MLX:
        return None  # nnsight models: patched runs recompute every position
    from mlx_lm.models.cache import KVCache

    return [KVCache() for _ in range(std.n_layers)]


def _continued(kv: list, start: int, rows: int) -> list:
    """KV caches holding the corrupted run's first ``start`` positions, for ``rows`` rows.

    Their buffers are the whole corrupted run's (``offset = start``), so the forward writes the
    positions it runs into them instead of growing a buffer (mlx-lm's 256-position steps)."""
    from mlx_lm.models.cache import KVCache

    caches = []
    for k, v in kv:
        cache = KVCache()
        cache.keys = mx.broadcast_to(k, (rows,) + k.shape[1:])
        cache.values = mx.broadcast_to(v, (rows,) + v.shape[1:])
        cache.offset = start
        caches.append(cache)
    return caches


def _as_baseline(std: Standardized, run: dict, wanted: set[int], kv: list | None = None) -> Baseline:
    tuple_out = any(isinstance(v, (tuple, list)) for v in run["acts"].values())
    acts = {k: backend.first(v) for k, v in run["acts"].items()} or dict(run["resid"])
    with backend.no_grad(std.model):
        logits = std.logits(run["last"])
    like = next(iter(acts.values()))
    return Baseline(acts={k: backend.to_numpy(v, np.float32) for k, v in acts.items() if k in wanted},
                    resid={k: backend.to_numpy(v, np.float32) for k, v in run["resid"].items()},
                    logits=logits, like=like, tuple_out=tuple_out, kv=kv)


def _patched_forward(std: Standardized, grid: Grid, rows: list[tuple[int, ...]], ids: list[int],
                     clean: Baseline, corrupt: Baseline, metric: Callable[[Any], Any]) -> list[float]:
    """One batched forward of the corrupted prompt, row ``r`` patched at cell ``rows[r]``."""
    model = std.model
    n, t = len(rows), grid.n_tokens
    layers = sorted({grid.layers[cell[0]] for cell in rows})
    start = layers[0]
    # Positions before the first patched one are the corrupted run's at every layer: with its KV
    # cache, the forward runs positions ``first..T-1`` only (``first = 0``: all, no cache).
    first = first_patched(grid, rows) if corrupt.kv is not None else 0
    edits = {}
    for layer in layers:
        act = clean.acts[layer][0]
        width = act.shape[-1]
        keep = np.ones((n, t, width if grid.heads is not None else 1), dtype=np.float32)
        patch = np.zeros((n, t, width), dtype=np.float32)
        for r, cell in enumerate(rows):
            if grid.layers[cell[0]] != layer:
                continue
            pos, feat = grid.region(cell)
            keep[(r, pos) + ((feat,) if grid.heads is not None else ())] = 0.0
            patch[r, pos, feat] = act[pos, feat]
        edits[layer] = (backend.from_numpy(model, keep[:, first:], like=clean.like),
                        backend.from_numpy(model, patch[:, first:], like=clean.like))
    skip_value = None
    if start > 0:
        resid = corrupt.resid[start][:, first:]
        resid = np.broadcast_to(resid, (n,) + resid.shape[1:])
        skip_value = backend.from_numpy(model, np.ascontiguousarray(resid), like=clean.like)
    kw = {"past_key_values": _continued(corrupt.kv, first, n)} if first else {}

    def read(m: Any) -> Any:
        if skip_value is not None:
            for layer in range(start):
                std.layers[layer].skip(skip_value)
        for layer in layers:
            keep, patch = edits[layer]
            edit_site(std, grid.component, layer, lambda x, k=keep, p=patch: x * k + p, clean.tuple_out)
        return backend.first(std.layers[-1].output)[:, -1]

    last = backend.run(model, [ids[first:]] * n, read, **kw)
    with backend.no_grad(model):
        values = metric(std.logits(last))
    return [float(v) for v in backend.to_numpy(values, np.float64).reshape(-1)]


def first_patched(grid: Grid, cells: list[tuple[int, ...]]) -> int:
    """The first position any of ``cells`` patches (0 when one patches every position)."""
    if grid.positions is None:
        return 0
    return min(grid.positions[cell[1]] for cell in cells)


def _scalar(value: Any) -> float:
    return float(backend.to_numpy(value, np.float64).reshape(-1)[0])


class NoBar:
    """What ``_bar`` gives when progress is off."""

    total: int | None = None
    n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        pass


def _bar(enabled: bool, desc: str, total: int | None = None) -> Any:
    if not enabled:
        return NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False)
