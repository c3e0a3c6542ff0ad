"""lmc_core: generalized linear mode connectivity for Transformers.

The canonical form is the meeting point: adapters turn a timm ViT or an HF GPT-2 into a
`CanonicalTransformer`, and every symmetry, alignment and interpolation works on it alone.

    canonicalize(model)                         # function-preserving rewrite (SPEC section 2)
    Permutation / SemiPermutation / Orthogonal / Invertible / Symmetry   (SPEC section 3)
    align(a, b, method, data) / align_many(models, method, data)        (SPEC section 4)
    interpolate(a, b, lam) / barrier(a, b, data) / simplex_barrier(models, data)   (section 1)
    export(aligned, like=original)              # back to a timm ViT / HF GPT-2 (align with keep_centred=True)
    fit_curve(a, b, data, kind="bezier"|"nurbs"|"polychain") / curve_barrier(curve, data)   # trained curves
    forget_set / unlearn / unlearning_metrics  # machine unlearning (ManiF-SMC and baselines)
"""

from . import multitask
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
from .curves import Curve, curve_barrier, fit_curve
from .export import NotRepresentableError, export
from .symmetry import Invertible, Orthogonal, Permutation, SemiPermutation, Symmetry, UnitMap
from .unlearning import ForgetSplit, LossThresholdAttack, forget_set, unlearn, unlearning_metrics

__all__ = [
    "METHODS", "PARAM_AXES", "Alignment", "BarrierResult", "CanonicalConfig",
    "CanonicalTransformer", "Curve", "ForgetSplit", "Invertible", "LossThresholdAttack",
    "MultiAlignment", "NotRepresentableError", "Orthogonal", "Permutation", "SemiPermutation",
    "SimplexResult", "Symmetry", "UnitMap", "UnsupportedModelError", "align", "align_many",
    "barrier", "canonical_forward", "canonicalize", "curve_barrier", "evaluate_ensemble", "export",
    "fit_curve", "forget_set", "interpolate", "lift_width", "multitask", "register_adapter",
    "simplex_barrier", "unlearn", "unlearning_metrics",
]
