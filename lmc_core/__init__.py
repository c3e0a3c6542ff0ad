"""lmc_core: generalized linear mode connectivity for Transformers.

The canonical form is the meeting point: adapters turn a timm ViT or an HF GPT-2 into a
`CanonicalTransformer`, and every symmetry, alignment and interpolation works on it alone.
"""

from .adapters import UnsupportedModelError, canonicalize, register_adapter
from .canonical import PARAM_AXES, CanonicalConfig, CanonicalTransformer, canonical_forward
from .symmetry import Invertible, Orthogonal, Permutation, SemiPermutation, Symmetry, UnitMap

__all__ = [
    "PARAM_AXES", "CanonicalConfig", "CanonicalTransformer", "Invertible", "Orthogonal", "Permutation",
    "SemiPermutation", "Symmetry", "UnitMap", "UnsupportedModelError", "canonical_forward", "canonicalize",
    "register_adapter",
]
