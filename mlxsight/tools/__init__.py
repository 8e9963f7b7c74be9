"""The research toolkit: lenses, attention patterns and head scores (and more), on either backend.

Every analysis takes an mlxsight model or an nnsight ``LanguageModel`` (torch) and returns a
``Result`` of plain data (numpy arrays, lists), which ``mlxsight.views`` renders. ``standardize``
gives architecture-independent access to a model's parts; ``backend`` is what differs between the
two backends. The core never imports this package.
"""

from . import backend
from .attention import AttentionPatterns
from .heads import HeadScores
from .lens import LensResult
from .result import Result
from .standardize import ArchitectureError, Standardized, standardize

__all__ = [
    "backend", "standardize", "Standardized", "ArchitectureError", "Result",
    "LensResult", "AttentionPatterns", "HeadScores",
]

# --- sparse autoencoders (sae.py, sae_analysis.py, sae_train.py) ---
from .sae import SAE, Site  # noqa: E402
from .sae_analysis import (  # noqa: E402
    FeatureActivations, FeatureAttribution, TopContexts, ablate, attribute, clamp, feature_activations, splice,
    steer, top_contexts,
)

__all__ += [
    "SAE", "Site", "FeatureActivations", "FeatureAttribution", "TopContexts", "splice", "ablate", "clamp", "steer",
    "feature_activations", "top_contexts", "attribute",
]
# --- end sparse autoencoders ---
