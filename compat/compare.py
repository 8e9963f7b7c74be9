"""Compare two captures value by value and print the verdict table.

Default tolerances, for float32 on both sides: a value ``a`` (mlx) matches ``b`` (nnsight) when
``|a - b| <= atol + rtol * |b|`` everywhere. Independent fp32 implementations of the same tiny model
(different BLAS, different op order) agree to ~1e-6 relative on O(1) activations and logits, so
1e-4 leaves two orders of magnitude of headroom for accumulation over layers. The errors this must
catch are far larger: a LayerNorm where the model has RMSNorm (or a missing norm weight) moves
values by O(mean/std) ~ 1e-1, a rotary/position off by one or a wrong row of a batch changes
every element at O(1), a doubled residual by 100%. Only very weak bugs (an eps of 1e-5 vs 1e-6
on unit-variance inputs, ~5e-6) hide under 1e-4; tighten ``--rtol/--atol`` to probe those.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .capture import Leaf, keyed

RTOL = 1e-4
ATOL = 1e-4


@dataclass
class Row:
    name: str
    shape: str
    dtype: str
    abs_diff: float | None
    rel_diff: float | None
    # "ok", "MISMATCH", "MISSING in <side>", "SHAPE", or "unchecked": an object that is neither a
    # tensor, a primitive nor a container (a KV cache) has no value to compare; it is listed, and
    # does not fail the check even when only one side has it (nnsight's root output carries a
    # DynamicCache that an MLX forward has no counterpart for).
    verdict: str

    @property
    def failed(self) -> bool:
        return self.verdict not in ("ok", "unchecked")

    @property
    def mismatch(self) -> bool:
        return self.verdict.startswith("MISMATCH")


def compare_leaves(a: Leaf, b: Leaf, rtol: float, atol: float) -> Row:
    """``a`` is the backend under test, ``b`` the reference (nnsight)."""
    dtype = a.dtype if a.dtype == b.dtype else f"{a.dtype}|{b.dtype}"
    numeric = [leaf.kind == "array" or leaf.kind == "value" and _is_number(leaf.data) for leaf in (a, b)]
    if all(numeric) and "array" in (a.kind, b.kind):  # a 0-d tensor may meet a Python number
        x, y = np.asarray(_numeric(a), dtype=np.float64), np.asarray(_numeric(b), dtype=np.float64)
        if x.shape != y.shape:
            return Row("", f"{x.shape}|{y.shape}", dtype, None, None, "SHAPE")
        return _numeric_row(x, y, dtype, rtol, atol)
    if a.kind == "value" and b.kind == "value":
        if _is_number(a.data) and _is_number(b.data):
            return _numeric_row(np.float64(a.data), np.float64(b.data), dtype, rtol, atol)
        same = a.data == b.data
        return Row("", "", dtype, None, None, "ok" if same else "MISMATCH")
    if "opaque" in (a.kind, b.kind) and {a.kind, b.kind} <= {"opaque", "value"} \
            and (a.kind == "opaque" or a.data is None) and (b.kind == "opaque" or b.data is None):
        return Row("", "", dtype, None, None, "unchecked")  # e.g. a KV cache object vs None
    return Row("", "", f"{a.kind}:{a.dtype}|{b.kind}:{b.dtype}", None, None, "MISMATCH")


def _numeric(leaf: Leaf):
    return leaf.data if leaf.kind == "array" else float(leaf.data)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _numeric_row(x, y, dtype: str, rtol: float, atol: float) -> Row:
    shape = "x".join(map(str, np.shape(x))) or "()"
    if np.size(x) == 0:
        return Row("", shape, dtype, 0.0, 0.0, "ok")
    diff = np.abs(x - y)
    # NaN/inf must agree in place and sign; they are not "within tolerance" of numbers.
    same_special = (np.isnan(x) & np.isnan(y)) | (np.isinf(x) & (x == y))
    finite = ~same_special
    abs_diff = float(np.max(np.where(finite, diff, 0.0)))
    rel = np.where(finite, diff / np.maximum(np.abs(y), np.finfo(np.float64).tiny), 0.0)
    rel_diff = float(np.max(rel))
    within = np.where(finite, diff <= atol + rtol * np.abs(y), True)
    ok = bool(np.all(within)) and not math.isnan(abs_diff)
    if ok:
        return Row("", shape, dtype, abs_diff, rel_diff, "ok")
    # where it is worst, and how much is off: a bug at a few positions (padding, one token) shows here
    bad = ~within if np.ndim(within) else np.array(True)
    worst = np.unravel_index(int(np.argmax(np.where(bad, diff, -1.0))), np.shape(x)) if np.ndim(x) else ()
    at = f" at [{','.join(map(str, worst))}]" if worst else ""
    return Row("", shape, dtype, abs_diff, rel_diff, f"MISMATCH{at} ({int(np.sum(bad))}/{np.size(x)} off)")


def compare(test: dict, ref: dict, rtol: float = RTOL, atol: float = ATOL,
            test_name: str = "mlx", ref_name: str = "nnsight") -> list[Row]:
    """Rows for every value saved on either side, in trace order."""
    a, b = keyed(test), keyed(ref)
    rows = []
    for key in list(b) + [k for k in a if k not in b]:
        if key not in a or key not in b:
            leaf, side = (b[key], test_name) if key not in a else (a[key], ref_name)
            verdict = "unchecked" if leaf.kind == "opaque" else f"MISSING in {side}"
            rows.append(Row(key, _shape(leaf), leaf.dtype, None, None, verdict))
        else:
            row = compare_leaves(a[key], b[key], rtol, atol)
            row.name = key
            rows.append(row)
    return rows


def _shape(leaf: Leaf) -> str:
    return "x".join(map(str, leaf.shape)) if leaf.kind == "array" else ""


def format_table(rows: list[Row]) -> str:
    header = ("name", "shape", "dtype", "max abs diff", "max rel diff", "verdict")
    cells = [header] + [(r.name, r.shape, r.dtype, _num(r.abs_diff), _num(r.rel_diff), r.verdict) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(header))).rstrip() for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


def summary(rows: list[Row]) -> str:
    failed = sum(r.failed for r in rows)
    unchecked = sum(r.verdict == "unchecked" for r in rows)
    worst = max((r.abs_diff for r in rows if r.abs_diff is not None and not r.failed), default=0.0)
    text = f"{len(rows)} values: {len(rows) - failed - unchecked} match, {failed} mismatch"
    if unchecked:
        text += f", {unchecked} unchecked (objects with no value to compare, e.g. a KV cache)"
    return text + f"; largest matching abs diff {worst:.3g}"
