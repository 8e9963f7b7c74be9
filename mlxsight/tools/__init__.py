"""The research toolkit: lenses, attention patterns, head scores, patching and steering, on either backend.

Every analysis takes an mlxsight model or an nnsight ``LanguageModel`` (torch) and returns a
``Result`` of plain data (numpy arrays, lists), which ``mlxsight.views`` renders. ``standardize``
gives architecture-independent access to a model's parts; ``backend`` is what differs between the
two backends. The core never imports this package.
"""

from . import backend
from .attention import AttentionPatterns, attention_patterns
from .attribution import attribution_patching
from .heads import HeadScores, head_scores
from .lens import LensResult, logit_lens
from .metrics import kl_div, logit_diff, probability
from .patching import PatchingResult, activation_patching
from .result import Result
from .standardize import ArchitectureError, Standardized, standardize
from .steering import (ScaleSearch, SteeringResult, SteeringVector, generate_steered, scale_search, steer,
                       steering_vector)
from .corpus import sample_corpus
from .tuned_lens import TunedLens

__all__ = [
    "backend", "standardize", "Standardized", "ArchitectureError", "Result",
    "logit_lens", "LensResult", "TunedLens", "sample_corpus", "attention_patterns", "AttentionPatterns",
    "head_scores", "HeadScores",
    "activation_patching", "attribution_patching", "PatchingResult", "logit_diff", "probability", "kl_div",
    "steering_vector", "generate_steered", "steer", "scale_search", "SteeringVector", "SteeringResult",
    "ScaleSearch",
]

# --- sparse autoencoders (sae.py, sae_analysis.py, sae_train.py) ---
from .sae import SAE, Site  # noqa: E402
from .sae_analysis import (  # noqa: E402
    FeatureActivations, FeatureAttribution, TopContexts, ablate, attribute, clamp, feature_activations, splice,
    top_contexts,
)
from .sae_analysis import steer as steer_features  # noqa: E402  (tools.steer is residual steering)

__all__ += [
    "SAE", "Site", "FeatureActivations", "FeatureAttribution", "TopContexts", "splice", "ablate", "clamp",
    "steer_features",
    "feature_activations", "top_contexts", "attribute",
]
# --- end sparse autoencoders ---
