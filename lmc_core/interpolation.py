"""Linear paths and simplices between models, and their loss barriers (SPEC section 1).

For models θ_A, θ_B, data D and the mean cross-entropy L:

    B_λ = L[λ θ_A + (1−λ) θ_B] − (λ L[θ_A] + (1−λ) L[θ_B]),    B = max_λ B_λ

on a λ grid that contains 0 and 1; the accuracy barrier is the same formula on the error rate
1 − acc. For M models, λ ranges over the simplex grid {w : w_m = k_m / R, Σ k_m = R} and
B = max_w L[Σ w_m θ_m] − Σ w_m L[θ_m].

"Vanilla" (raw models) interpolates the raw parameters; canonical models are interpolated in
canonical form. `lmc_core.engine` evaluates the points (one ensemble pass on a GPU, one point at
a time on a CPU). The expected losses use the engine's exact lerp, so B_λ is exactly 0 at both
ends, and a model joined with itself has a barrier of exactly 0.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields

import torch
from torch import Tensor, nn

from .adapters import canonicalize
from .canonical import CanonicalTransformer, check_compatible
from .engine import (
    Data,
    check_raw,
    combine_into,
    device_of,
    lerp,
    lerp_chain,
    points_metrics,
    stick_breaking,
)


@torch.no_grad()
def interpolate(model_a: nn.Module, model_b: nn.Module, lam: float) -> nn.Module:
    """θ = λ θ_A + (1 − λ) θ_B, computed as torch.lerp(θ_B, θ_A, λ): λ = 1 gives A, λ = 0 gives B.

    Raw models (same class, keys, shapes, dtypes): a deep copy of A with every floating tensor
    interpolated, non-floating buffers from A. Canonical models: a CanonicalTransformer with
    interpolated canonical parameters. A raw model paired with a canonical one is canonicalised.
    """
    if isinstance(model_a, CanonicalTransformer) or isinstance(model_b, CanonicalTransformer):
        a, b = canonicalize(model_a), canonicalize(model_b)
        check_compatible(a, b)
        pa, pb = a.params(), b.params()
        return a.with_params({k: torch.lerp(pb[k].to(v), v, lam) for k, v in pa.items()})
    check_raw(model_a, model_b)
    out = copy.deepcopy(model_a)
    combine_into(out.state_dict(), [model_a.state_dict(), model_b.state_dict()], [lam])
    return out



# -- two models: the path ------------------------------------------------------------------------

def lambda_grid(lambdas: int | Sequence[float]) -> list[float]:
    """An int n: [i / (n−1) for i in 0..n−1]; a sequence: checked to lie in [0, 1] and to contain
    both 0 and 1 (the barrier is measured against the ends)."""
    if isinstance(lambdas, int):
        if lambdas < 2:
            raise ValueError(f"lambdas = {lambdas}: need at least 2 points (0 and 1)")
        return [i / (lambdas - 1) for i in range(lambdas)]
    grid = [float(x) for x in lambdas]
    if 0.0 not in grid or 1.0 not in grid:
        raise ValueError(f"the λ grid must contain both 0 and 1 (the path's ends), got {grid}")
    if any(not 0.0 <= x <= 1.0 for x in grid):
        raise ValueError(f"every λ must lie in [0, 1], got {grid}")
    return grid


@dataclass
class BarrierResult:
    """Loss and accuracy along θ(λ) = λ θ_A + (1−λ) θ_B; λ = 1 is model A, λ = 0 model B.

    `loss_excess[i]` = B_λ = L_λ − lerp(L_B, L_A, λ); `acc_excess` is the same on the error
    rate 1 − acc; the barriers are their maxima. `space`: "raw" (vanilla) or "canonical"."""

    lambdas: list[float]
    losses: list[float]
    accuracies: list[float]
    space: str = "canonical"
    loss_excess: list[float] = field(init=False)
    acc_excess: list[float] = field(init=False)

    def __post_init__(self) -> None:
        errors = [1.0 - a for a in self.accuracies]
        err_a, err_b = 1.0 - self.acc_a, 1.0 - self.acc_b
        self.loss_excess = [x - lerp(self.loss_b, self.loss_a, lam) for lam, x in zip(self.lambdas, self.losses, strict=True)]
        self.acc_excess = [e - lerp(err_b, err_a, lam) for lam, e in zip(self.lambdas, errors, strict=True)]

    @property
    def loss_a(self) -> float:
        return self.losses[self.lambdas.index(1.0)]

    @property
    def loss_b(self) -> float:
        return self.losses[self.lambdas.index(0.0)]

    @property
    def acc_a(self) -> float:
        return self.accuracies[self.lambdas.index(1.0)]

    @property
    def acc_b(self) -> float:
        return self.accuracies[self.lambdas.index(0.0)]

    @property
    def loss_barrier(self) -> float:
        """B = max_λ B_λ (≥ 0: the ends contribute exactly 0)."""
        return max(self.loss_excess)

    @property
    def acc_barrier(self) -> float:
        """max_λ of the error-rate excess, as a fraction."""
        return max(self.acc_excess)

    @classmethod
    def from_dict(cls, d: Mapping) -> BarrierResult:
        """Inverse of `to_dict` (derived numbers are recomputed)."""
        return cls(list(d["lambdas"]), list(d["losses"]), list(d["accuracies"]), d.get("space", "canonical"))

    def to_dict(self) -> dict:
        return asdict(self) | {
            "loss_a": self.loss_a, "loss_b": self.loss_b, "acc_a": self.acc_a, "acc_b": self.acc_b,
            "loss_barrier": self.loss_barrier, "acc_barrier": self.acc_barrier,
        }


def barrier(
    model_a: nn.Module,
    model_b: nn.Module,
    data: Data,
    lambdas: int | Sequence[float] = 11,
    *,
    device: torch.device | str | None = None,
    max_ensemble: int | None = None,
    autocast: bool | None = None,
    progress: bool = False,
    strategy: str = "auto",
) -> BarrierResult:
    """The loss and accuracy barrier between two models on `data` (SPEC section 1).

    Two raw models: vanilla, the raw parameters are interpolated. Otherwise (either is
    canonical) the canonical forms are interpolated. `strategy` (module docstring): "auto" runs
    the λ points as one ensemble per batch on CUDA, or wherever `max_ensemble` is given, in chunks
    of `max_ensemble` members (default: from the activation size and the free memory), and one
    point at a time on CPU; "ensemble" or "loop" force one. bf16 autocast on CUDA (`autocast=None`), fp32 summed losses accumulated in
    fp64. `data`: one (inputs, targets) pair or an iterable of them; targets None means
    next-token language modelling. `device`: default model A's. Memory (ensemble, and canonical
    loop): the stacked canonical parameters of all λ stay on the device (E × one canonical
    model; GPT-2 at the paper's size: about 130 MB a point in fp32); the raw loop keeps one copy
    of model A instead. Both loops read `data` once and keep its batches."""
    grid = lambda_grid(lambdas)
    losses, accs, space = points_metrics([model_a, model_b], [[lam] for lam in grid], data,
                                          device=device_of(model_a, device), max_ensemble=max_ensemble,
                                          autocast=autocast, progress=progress, strategy=strategy)
    return BarrierResult(grid, losses, accs, space)


# -- M models: the simplex -----------------------------------------------------------------------

def simplex_counts(num_models: int, resolution: int) -> list[tuple[int, ...]]:
    """All (k_1, …, k_M) of non-negative integers with Σ k = resolution, the first model's count
    descending (so the first point is model 1's corner; for M = 2, λ = 1 down to 0)."""
    if num_models < 2 or resolution < 1:
        raise ValueError(f"need ≥ 2 models and resolution ≥ 1, got {num_models} and {resolution}")
    return _compositions(num_models, resolution)


def _compositions(parts: int, total: int) -> list[tuple[int, ...]]:
    if parts == 1:
        return [(total,)]
    return [(k, *rest) for k in range(total, -1, -1) for rest in _compositions(parts - 1, total - k)]


@dataclass
class SimplexResult:
    """Loss and accuracy at the simplex points θ(w) = Σ_m w_m θ_m.

    `expected[p]` = Σ_m w_m L_m and `deviation[p]` = loss − expected; the accuracy versions use
    the error rate. Corners are the models themselves, so their deviation is exactly 0."""

    weights: list[list[float]]  # (P, M), rows sum to 1
    losses: list[float]
    accuracies: list[float]
    model_losses: list[float]
    model_accuracies: list[float]
    expected: list[float]
    deviation: list[float]
    acc_deviation: list[float]
    space: str = "canonical"

    @property
    def loss_barrier(self) -> float:
        return max(self.deviation)

    @property
    def acc_barrier(self) -> float:
        return max(self.acc_deviation)

    def weights_tensor(self) -> Tensor:
        return torch.tensor(self.weights, dtype=torch.float64)

    @classmethod
    def from_dict(cls, d: Mapping) -> SimplexResult:
        """Inverse of `to_dict`."""
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})

    def to_dict(self) -> dict:
        return asdict(self) | {"loss_barrier": self.loss_barrier, "acc_barrier": self.acc_barrier}


def simplex_barrier(
    models: Sequence[nn.Module],
    data: Data,
    resolution: int = 10,
    *,
    device: torch.device | str | None = None,
    max_ensemble: int | None = None,
    autocast: bool | None = None,
    progress: bool = False,
    strategy: str = "auto",
) -> SimplexResult:
    """B = max_w L[Σ w_m θ_m] − Σ w_m L[θ_m] over {w_m = k_m / resolution, Σ k_m = resolution}.

    Raw models are combined in raw space (vanilla), otherwise in canonical form, through the
    exact lerp chain of `combine_into`; the M corners give the models' own losses L_m.
    `strategy` and the other keywords as for `barrier`."""
    M = len(models)
    counts = simplex_counts(M, resolution)
    chains = [stick_breaking(k) for k in counts]
    losses, accs, space = points_metrics(list(models), chains, data, device=device_of(models[0], device),
                                          max_ensemble=max_ensemble, autocast=autocast, progress=progress,
                                          strategy=strategy)
    corners = [counts.index(tuple(resolution if j == m else 0 for j in range(M))) for m in range(M)]
    model_losses = [losses[i] for i in corners]
    model_errors = [1.0 - accs[i] for i in corners]
    expected = [lerp_chain(model_losses, c) for c in chains]
    acc_expected = [lerp_chain(model_errors, c) for c in chains]
    return SimplexResult(
        weights=[[k / resolution for k in ks] for ks in counts],
        losses=losses,
        accuracies=accs,
        model_losses=model_losses,
        model_accuracies=[accs[i] for i in corners],
        expected=expected,
        deviation=[x - e for x, e in zip(losses, expected, strict=True)],
        acc_deviation=[(1.0 - a) - e for a, e in zip(accs, acc_expected, strict=True)],
        space=space,
    )
