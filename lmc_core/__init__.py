"""lmc_core: generalized linear mode connectivity for Transformers.

The canonical form is the meeting point: adapters turn a timm ViT or an HF GPT-2 into a
`CanonicalTransformer`, and every symmetry, alignment and interpolation works on it alone.

    canonicalize(model)                         # function-preserving rewrite (SPEC section 2)
    Permutation / SemiPermutation / Orthogonal / Invertible / Symmetry   (SPEC section 3)
    align(a, b, method, data) / align_many(models, method, data)        (SPEC section 4)
    interpolate(a, b, lam) / barrier(a, b, data) / simplex_barrier(models, data)   (section 1)
"""

from .adapters import UnsupportedModelError, canonicalize, register_adapter
from .align import METHODS, Alignment, MultiAlignment, align, align_many, lift_width
from .barrier import (
    BarrierResult,
    SimplexResult,
    barrier,
    evaluate_ensemble,
    interpolate,
    simplex_barrier,
)
from .canonical import PARAM_AXES, CanonicalConfig, CanonicalTransformer, canonical_forward
from .symmetry import Invertible, Orthogonal, Permutation, SemiPermutation, Symmetry, UnitMap

__all__ = [
    "METHODS", "PARAM_AXES", "Alignment", "BarrierResult", "CanonicalConfig", "CanonicalTransformer",
    "Invertible", "MultiAlignment", "Orthogonal", "Permutation", "SemiPermutation", "SimplexResult", "Symmetry",
    "UnitMap", "UnsupportedModelError", "align", "align_many", "barrier", "canonical_forward", "canonicalize",
    "evaluate_ensemble", "interpolate", "lift_width", "register_adapter", "simplex_barrier",
]
