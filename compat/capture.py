"""Saved values as comparable records: flattened, converted to float64 numpy, written to a file.

A capture file is a pickle of ``{"backend", "script", "traces": [{"ordinal", "file", "line",
"values": {flat_name: Leaf}}], "status", "error"}``, rewritten after every trace so a crash
still leaves what was captured before it.
"""

from __future__ import annotations

import os
import pickle
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

PRIMITIVES = (bool, int, float, complex, str, bytes, type(None))


@dataclass
class Leaf:
    """One compared value. ``kind``: "array" (``data`` float64), "value" (a primitive), or
    "opaque" (an object that is neither; only its type is recorded)."""

    kind: str
    dtype: str = ""
    shape: tuple = ()
    data: Any = None


def _array_leaf(value: Any) -> Leaf | None:
    if "torch" in sys.modules:
        import torch

        if isinstance(value, torch.Tensor):
            t = value.detach().cpu()
            data = t.to(torch.float64).numpy() if not t.is_complex() else t.numpy().astype(np.complex128)
            return Leaf("array", str(t.dtype).removeprefix("torch."), tuple(t.shape), data)
    if "mlx.core" in sys.modules:
        import mlx.core as mx

        if isinstance(value, mx.array):
            data = np.array(value.astype(mx.float32) if value.dtype == mx.bfloat16 else value)
            return Leaf("array", str(value.dtype).removeprefix("mlx.core."), tuple(value.shape),
                        data.astype(np.float64))
    if isinstance(value, np.ndarray):
        return Leaf("array", str(value.dtype), value.shape, value.astype(np.float64))
    if isinstance(value, np.generic):
        return Leaf("value", str(value.dtype), (), value.item())
    return None


def flatten(name: str, value: Any, out: dict[str, Leaf], seen: frozenset = frozenset()) -> None:
    """Add ``value``'s leaves to ``out``: containers get ``[i]`` / ``[key]`` suffixes."""
    leaf = _array_leaf(value)
    if leaf is not None:
        out[name] = leaf
    elif isinstance(value, PRIMITIVES):
        out[name] = Leaf("value", type(value).__name__, (), value)
    elif id(value) in seen:  # a container that holds itself
        out[name] = Leaf("opaque", "<cycle>")
    elif isinstance(value, dict) or _is_mapping_output(value):
        for key, item in value.items():
            flatten(f"{name}[{key!r}]", item, out, seen | {id(value)})
    elif isinstance(value, (list, tuple)):
        if not value:
            out[name] = Leaf("value", type(value).__name__, (), ())
        for i, item in enumerate(value):
            flatten(f"{name}[{i}]", item, out, seen | {id(value)})
    else:
        out[name] = Leaf("opaque", type(value).__name__)


def _is_mapping_output(value: Any) -> bool:
    # transformers' ModelOutput is an OrderedDict subclass, but be lenient about look-alikes
    return hasattr(value, "items") and hasattr(value, "keys") and callable(value.items)


class CaptureFile:
    """Accumulates trace records for one backend run and keeps them on disk."""

    def __init__(self, path: str, backend: str, script: str) -> None:
        self.path = path
        self.record: dict[str, Any] = {"backend": backend, "script": script, "traces": [],
                                       "status": "running", "error": None}
        self.write()

    def add_trace(self, file: str | None, line: int | None, values: dict[str, Any]) -> None:
        leaves: dict[str, Leaf] = {}
        for name, value in values.items():
            flatten(name, value, leaves)
        self.record["traces"].append({"ordinal": len(self.record["traces"]), "file": file,
                                      "line": line, "values": leaves})
        self.write()

    def finish(self, status: str, error: str | None = None) -> None:
        self.record["status"], self.record["error"] = status, error
        self.write()

    def write(self) -> None:
        tmp = f"{self.path}.tmp"
        with open(tmp, "wb") as f:
            pickle.dump(self.record, f)
        os.replace(tmp, self.path)


def load(path: str) -> dict[str, Any]:
    with open(path, "rb") as f:
        return pickle.load(f)


def keyed(record: dict[str, Any]) -> dict[str, Leaf]:
    """``{"#ordinal file:line name": Leaf}`` over every trace of a capture."""
    out = {}
    for trace in record["traces"]:
        where = f"{os.path.basename(trace['file'] or '?')}:{trace['line']}"
        for name, leaf in trace["values"].items():
            out[f"#{trace['ordinal']} {where} {name}"] = leaf
    return out
