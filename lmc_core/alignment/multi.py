"""Multi-model alignment: universe matching, then learned refinement (SPEC section 4).

Universe matching: U⁰ = the first model; repeat: align every model to U by weight matching,
U = the mean of the aligned models. The refinement then learns every model's latents at once,
with interpolation weights λ ~ Dirichlet(α·1) (α = 0.1 by default) over the simplex.
"""

from __future__ import annotations

from ..canonical import CanonicalTransformer
from ..symmetry import Symmetry
from .weight_matching import weight_matching


def universe_matching(models: list[CanonicalTransformer], *, iterations: int = 5, wm_iterations: int = 15,
                      residual: str = "orthogonal", keep_centred: bool = False) -> tuple[list[Symmetry], dict[str, list]]:
    """Symmetries taking every model into a common frame, and the spread after each round
    (mean relative distance of the aligned models to the universe)."""
    universe = models[0]
    history: dict[str, list] = {"round": [], "spread": []}
    symmetries: list[Symmetry] = []
    for round_ in range(1, iterations + 1):
        symmetries, spreads = [], []
        for model in models:
            sym, hist = weight_matching(universe, model, iterations=wm_iterations, residual=residual,
                                        keep_centred=keep_centred)
            symmetries.append(sym)
            spreads.append(hist["weight_distance"][-1])
        aligned = [s.apply(m).params() for s, m in zip(symmetries, models, strict=True)]
        mean = {k: sum(p[k] for p in aligned).detach() / len(aligned) for k in aligned[0]}
        universe = universe.with_params(mean)
        history["round"].append(round_)
        history["spread"].append(sum(spreads) / len(spreads))
    return symmetries, history
