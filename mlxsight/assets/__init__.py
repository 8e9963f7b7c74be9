"""Models shipped with mlxsight, and the recipe for an opt-in larger one.

``path("stories260k")``: Karpathy's stories260K (TinyStories, Llama, 260K parameters, MIT), converted
to a checkpoint that both ``mlx_lm.load`` and transformers read. See its ``SOURCE.md``.
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def path(name: str = "stories260k") -> Path:
    """The directory of a bundled checkpoint."""
    found = _HERE / name
    if not (found / "config.json").exists():
        available = sorted(p.name for p in _HERE.iterdir() if (p / "config.json").exists())
        raise FileNotFoundError(f"no bundled model {name!r}; bundled: {available}")
    return found
