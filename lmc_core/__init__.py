"""lmc_core: generalized linear mode connectivity for Transformers, on your own models.

The canonical form is the meeting point: adapters turn a timm ViT or an HF GPT-2 into a
`CanonicalTransformer`, and every symmetry, alignment, interpolation and curve works on it alone.

    canonicalize(model)                         # function-preserving rewrite (SPEC section 2)
    Permutation / SemiPermutation / Orthogonal / Invertible / Symmetry   (SPEC section 3)
    align(a, b, method, data) / align_many(models, method, data) / lift_width(narrow, target=wide.config)
    interpolate(a, b, lam) / barrier(a, b, data) / simplex_barrier(models, data)   (section 1)
    fit_curve(a, b, data, kind="bezier"|"nurbs"|"polychain", space="canonical"|"weights") / curve_barrier(curve, data)
    export(aligned, like=original)              # back to a timm ViT / HF GPT-2
    CheckpointCache()                           # trained models stored by what decides them

Importing the package costs nothing: each name is imported from its module on first use, so
`lmc --help` runs without torch and a GPT-2 user never loads timm (nor a ViT user
transformers). The modules: `canonical`, `adapters` (one file per architecture, `export`),
`symmetry`, `alignment`, `interpolation` (paths and barriers) over `engine` (how points are
evaluated), `curves`, `metrics`, `cache`, `distributed` (torchrun), `cli` (`lmc`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Public name -> the module that defines it.
_SOURCES = {
    "canonicalize": "adapters", "register_adapter": "adapters", "UnsupportedModelError": "adapters",
    "export": "adapters", "NotRepresentableError": "adapters",
    "PARAM_AXES": "canonical", "CanonicalConfig": "canonical", "CanonicalTransformer": "canonical",
    "canonical_forward": "canonical",
    "Symmetry": "symmetry", "UnitMap": "symmetry", "Permutation": "symmetry",
    "SemiPermutation": "symmetry", "Orthogonal": "symmetry", "Invertible": "symmetry",
    "METHODS": "alignment", "Alignment": "alignment", "MultiAlignment": "alignment", "align": "alignment",
    "align_many": "alignment", "lift_width": "alignment",
    "interpolate": "interpolation", "barrier": "interpolation", "simplex_barrier": "interpolation",
    "BarrierResult": "interpolation", "SimplexResult": "interpolation",
    "evaluate_ensemble": "engine",
    "Curve": "curves", "fit_curve": "curves", "curve_barrier": "curves",
    "WeightCurve": "curves", "CheckpointCache": "cache",
}

__all__ = [  # what a user calls; the docstrings are the reference
    "Alignment", "BarrierResult", "CanonicalConfig", "CanonicalTransformer", "CheckpointCache",
    "Curve", "Invertible", "METHODS", "MultiAlignment", "NotRepresentableError", "Orthogonal",
    "PARAM_AXES", "Permutation", "SemiPermutation", "SimplexResult", "Symmetry", "UnitMap",
    "UnsupportedModelError", "WeightCurve", "align", "align_many", "barrier", "canonical_forward", "canonicalize",
    "curve_barrier", "evaluate_ensemble", "export", "fit_curve", "interpolate", "lift_width",
    "register_adapter", "simplex_barrier",
]


def __getattr__(name: str) -> Any:
    module = _SOURCES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # the next lookup is an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what type checkers and editors see; at run time __getattr__ imports these
    from .adapters import (
        NotRepresentableError,
        UnsupportedModelError,
        canonicalize,
        export,
        register_adapter,
    )
    from .alignment import METHODS, Alignment, MultiAlignment, align, align_many, lift_width
    from .cache import CheckpointCache
    from .canonical import PARAM_AXES, CanonicalConfig, CanonicalTransformer, canonical_forward
    from .curves import Curve, WeightCurve, curve_barrier, fit_curve
    from .engine import evaluate_ensemble
    from .interpolation import BarrierResult, SimplexResult, barrier, interpolate, simplex_barrier
    from .symmetry import Invertible, Orthogonal, Permutation, SemiPermutation, Symmetry, UnitMap
