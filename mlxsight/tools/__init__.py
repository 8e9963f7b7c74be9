"""Research tools over the public tracing API; each takes an mlxsight model or an nnsight model."""

# --- sparse autoencoders (sae*.py) ---
from .sae import SAE, Site  # noqa: E402,F401
# --- end sparse autoencoders ---
