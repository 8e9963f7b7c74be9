"""Activation patching: which layer, position (and head) carries the difference between two prompts.

``activation_patching(model, clean, corrupted, metric)`` runs the corrupted prompt with one
activation replaced by the clean prompt's, for every cell of a layers x positions (x heads) grid,
and records the metric of each patched run.

How it is fast, with the values of a loop of one patched trace per cell:

- One traced forward (the two prompts as two invokes) stores what every cell needs: the clean activations, and the
  corrupted run's residual stream entering each layer.
- A patched run that starts at layer ``l`` does not recompute layers ``0..l-1``: those layers are
  skipped (``envoy.skip``) with the stored corrupted residual as their output.
- Cells run as rows of one batched forward: all positions (and heads) of a layer together, and
  consecutive layers together while a forward has few rows (then per-trace overhead, not compute,
  dominates). A row patched at a later layer of its forward carries the corrupted values until
  then; the patch is exact arithmetic (``x * keep + patch`` with 0/1 ``keep``), so untouched rows
  and positions pass through bit for bit.
- A cell whose clean and corrupted activations are identical (e.g. positions before the first
  differing token) is the corrupted run itself: its score is the corrupted baseline, not rerun.

Prompts must have the same number of tokens (position ``i`` must mean the same place in both);
prompts of different lengths are rejected with the two tokenizations, never padded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from . import backend
from .metrics import bind, metric_name
from .result import Result
from .standardize import Standardized, standardize

COMPONENTS = ("resid", "attn", "mlp", "heads")
OUT_PROJ = ("o_proj", "c_proj", "dense", "out_proj")  # an attention block's output projection
MERGE_ROWS = 16  # layers share a forward while it has at most this many rows (overhead-bound)


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
    std = standardize(model)
    clean_ids, corrupt_ids = aligned_ids(model, clean, corrupted)
    grid = Grid.make(std, component, len(clean_ids), layers, positions, heads)

    clean_run, corrupt_run = _baselines(std, clean_ids, corrupt_ids, grid)
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

    forwards = _group(grid, todo, batch_size)
    for rows in _progress(forwards, progress, f"activation patching ({component})"):
        values = _patched_forward(std, grid, rows, corrupt_ids, clean_run, corrupt_run, fn)
        for cell, value in zip(rows, values):
            scores[cell] = value
    return PatchingResult(
        scores=scores, clean=clean_value, corrupted=corrupt_value, layers=list(grid.layers),
        positions=None if grid.positions is None else list(grid.positions),
        heads=None if grid.heads is None else list(grid.heads), component=component,
        tokens=token_strings(model, clean_ids), metric=metric_name(metric))


# -- inputs ---------------------------------------------------------------------------------------

def token_ids(model: Any, prompt: Any) -> list[int]:
    """A prompt (str, ids, or a ``[1, T]`` array) as a list of token ids, tokenized by the model."""
    if isinstance(prompt, str):
        return [int(i) for i in model.tokenizer(prompt)["input_ids"]]
    ids = backend.to_numpy(prompt) if not isinstance(prompt, (list, tuple)) else np.asarray(prompt)
    if ids.ndim == 2 and ids.shape[0] == 1:
        ids = ids[0]
    if ids.ndim != 1:
        raise ValueError(f"expected one prompt (a string or a list of token ids), got shape {ids.shape}")
    return [int(i) for i in ids]


def token_strings(model: Any, ids: list[int]) -> list[str]:
    """The tokens as strings (their ids as strings for a model without a tokenizer)."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        return [str(i) for i in ids]
    return [str(t) for t in tokenizer.convert_ids_to_tokens(ids)]


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


def _group(grid: Grid, cells: list[tuple[int, ...]], batch_size: int) -> list[list[tuple[int, ...]]]:
    """Cells into forwards: at most ``batch_size`` rows; consecutive layers share one while small."""
    by_layer: dict[int, list] = {}
    for cell in cells:
        by_layer.setdefault(cell[0], []).append(cell)
    forwards: list[list] = []
    current: list = []
    for li in sorted(by_layer, key=lambda i: grid.layers[i]):
        rows = by_layer[li]
        if current and len(current) + len(rows) > MERGE_ROWS:
            forwards.append(current)
            current = []
        if len(rows) > batch_size:
            forwards += [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
        else:
            current += rows
    if current:
        forwards.append(current)
    return forwards


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

    with backend.no_grad(model):
        with model.trace() as tracer:
            with tracer.invoke([clean_ids]):
                clean = backend.save(model, read())
            with tracer.invoke([corrupt_ids]):
                corrupt = backend.save(model, read())
    return _as_baseline(std, clean, wanted), _as_baseline(std, corrupt, wanted)


def _as_baseline(std: Standardized, run: dict, wanted: set[int]) -> Baseline:
    tuple_out = any(isinstance(v, (tuple, list)) for v in run["acts"].values())
    acts = {k: backend.first(v) for k, v in run["acts"].items()} or dict(run["resid"])
    with backend.no_grad(std.model):
        logits = std.logits(run["last"])
    like = next(iter(acts.values()))
    return Baseline(acts={k: backend.to_numpy(v, np.float32) for k, v in acts.items() if k in wanted},
                    resid={k: backend.to_numpy(v, np.float32) for k, v in run["resid"].items()},
                    logits=logits, like=like, tuple_out=tuple_out)


def _patched_forward(std: Standardized, grid: Grid, rows: list[tuple[int, ...]], ids: list[int],
                     clean: Baseline, corrupt: Baseline, metric: Callable[[Any], Any]) -> list[float]:
    """One batched forward of the corrupted prompt, row ``r`` patched at cell ``rows[r]``."""
    model = std.model
    n, t = len(rows), grid.n_tokens
    layers = sorted({grid.layers[cell[0]] for cell in rows})
    start = layers[0]
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
        edits[layer] = (backend.from_numpy(model, keep, like=clean.like),
                        backend.from_numpy(model, patch, like=clean.like))
    skip_value = None
    if start > 0:
        resid = np.broadcast_to(corrupt.resid[start], (n,) + corrupt.resid[start].shape[1:])
        skip_value = backend.from_numpy(model, np.ascontiguousarray(resid), like=clean.like)

    def read(m: Any) -> Any:
        if skip_value is not None:
            for layer in range(start):
                std.layers[layer].skip(skip_value)
        for layer in layers:
            keep, patch = edits[layer]
            edit_site(std, grid.component, layer, lambda x, k=keep, p=patch: x * k + p, clean.tuple_out)
        return backend.first(std.layers[-1].output)[:, -1]

    last = backend.run(model, [ids] * n, read)
    with backend.no_grad(model):
        values = metric(std.logits(last))
    return [float(v) for v in backend.to_numpy(values, np.float64).reshape(-1)]


def _scalar(value: Any) -> float:
    return float(backend.to_numpy(value, np.float64).reshape(-1)[0])


def _progress(items: list, enabled: bool, desc: str) -> Any:
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, leave=False)
