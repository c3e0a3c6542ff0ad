"""Trained curves between two models: Bézier and polygonal chains (Garipov et al. 2018) and
NURBS (EXTRA, NeurIPS 2025), in canonical form, and their barriers.

A curve with K control points θ_0 = B, θ_1, …, θ_{K−2}, θ_{K−1} = A (`num_bends` = K, both
ends included, as in Garipov's code) is

    θ(t) = Σ_k c_k(t) θ_k,   t ∈ [0, 1],   θ(0) = B, θ(1) = A,

so t plays the role of λ on the line θ(λ) = λ θ_A + (1 − λ) θ_B. All three kinds are splines
on a clamped uniform knot vector (p + 1 knots at 0 and at 1, interior knots i / (K − p)):

- "bezier": degree p = K − 1 (the Bernstein polynomials; K = 3 is Garipov's one-bend curve);
- "polychain": degree 1 (hat functions on t = k / (K − 1): Garipov's polygonal chain);
- "nurbs": degree p = min(3, K − 1) with a learnable positive weight w_k = exp(ρ_k) per
  control point, c_k = N_k w_k / Σ_j N_j w_j (EXTRA's curve). Equal weights give the B-spline.

The basis is Cox–de Boor in float64 with the last knot span closed, so t = 1 is evaluated
(EXTRA's code leaves every coefficient 0 there) and c(0), c(1) are exactly one-hot: the curve's
ends are the models bit for bit. Control points are full canonical parameter sets: a point
of the curve mixes the QK and OV circuits of its control points exactly as interpolation does.
The interior points start on the straight line at the Greville abscissae ξ_k (the knot
averages), where every kind reproduces the line: the untrained curve is the line.

Training (`fit_curve`): per batch draw t ~ U(0, 1) (or several t, for an objective that
compares points, like EXTRA's order-aware term), evaluate the model at θ(t) with the ensemble
forward of the barrier engine, minimise its loss plus 0.5 · wd · ‖θ(t)‖² over the weight
matrices (Garipov's weight decay on the point; here on canonical matrices), with Adam and a
cosine schedule. `curve_barrier` is `barrier`'s definition along t instead of λ.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .adapters import canonicalize
from .canonical import CanonicalConfig, CanonicalTransformer, canonical_forward, check_compatible
from .engine import Batch, Data, as_batches, ensemble_metrics, pick_strategy
from .interpolation import BarrierResult, lambda_grid
from .metrics import autocast_context, loss_and_correct
from .progress import progress_bar
from .schedules import make_scheduler
from .symmetry import Symmetry

KINDS = ("bezier", "nurbs", "polychain")
MAX_NURBS_DEGREE = 3  # EXTRA's cubic NURBS
DECAY_PARAMS = ("patch_embed", "qk", "ov", "mlp_in", "mlp_out", "head")  # weight matrices, as train.py

# objective(logits (E, B, ...), inputs, targets, ts (E,)) -> scalar loss of the E points
Objective = Callable[[Tensor, Tensor, Tensor | None, Tensor], Tensor]


# -- the basis -----------------------------------------------------------------------------------

def curve_degree(kind: str, num_bends: int) -> int:
    """Spline degree of a curve of `kind` with `num_bends` control points (ends included)."""
    if kind not in KINDS:
        raise ValueError(f"unknown curve kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    if not isinstance(num_bends, int) or num_bends < 3:
        raise ValueError(f"num_bends = {num_bends!r}: a curve needs at least 3 control points (both ends and "
                         "one bend); with 2 it is the straight line, which lmc_core.barrier measures")
    return {"bezier": num_bends - 1, "polychain": 1, "nurbs": min(MAX_NURBS_DEGREE, num_bends - 1)}[kind]


def clamped_knots(num_points: int, degree: int) -> Tensor:
    """Clamped uniform knots (float64): degree + 1 zeros, interior i / (K − p), degree + 1 ones."""
    inner = [i / (num_points - degree) for i in range(1, num_points - degree)]
    return torch.tensor([0.0] * (degree + 1) + inner + [1.0] * (degree + 1), dtype=torch.float64)


def bspline_basis(ts: Tensor, knots: Tensor, degree: int) -> Tensor:
    """(E, K) B-spline basis N_{k,p}(t) by Cox–de Boor, K = len(knots) − degree − 1.

    Degree 0 uses half-open spans [u_i, u_{i+1}) except the last non-empty one, which is
    closed, so the basis sums to 1 on all of [u_0, u_last], t = u_last included; 0/0 is 0."""
    t = ts.to(torch.float64)[:, None]
    lo, hi = knots[:-1], knots[1:]
    basis = ((t >= lo) & (t < hi)).double()
    last = int(torch.nonzero(hi > lo).max())
    basis[:, last] = torch.where(t[:, 0] == knots[-1], 1.0, basis[:, last])
    for p in range(1, degree + 1):
        left_den, right_den = knots[p:-1] - knots[:-p - 1], knots[p + 1:] - knots[1:-p]
        left = torch.where(left_den > 0, (t - knots[:-p - 1]) / left_den.where(left_den > 0, 1.0), 0.0)
        right = torch.where(right_den > 0, (knots[p + 1:] - t) / right_den.where(right_den > 0, 1.0), 0.0)
        basis = left * basis[:, :-1] + right * basis[:, 1:]
    return basis


def greville(knots: Tensor, degree: int) -> list[float]:
    """Greville abscissae ξ_k = (u_{k+1} + … + u_{k+p}) / p: control points at line(ξ_k) make
    the spline (and a NURBS with equal weights) reproduce the line exactly in exact arithmetic."""
    K = len(knots) - degree - 1
    return [float(knots[k + 1:k + degree + 1].mean()) for k in range(K)]


def check_ts(ts: Tensor | Sequence[float] | float) -> Tensor:
    """ts as a float64 vector, each checked to lie in [0, 1]."""
    t = torch.as_tensor(ts, dtype=torch.float64).reshape(-1)
    bad = t[(t < 0) | (t > 1) | t.isnan()]
    if len(bad):
        raise ValueError(f"curve parameter t must lie in [0, 1] (t = 0 is model B, t = 1 model A), "
                         f"got {bad.tolist()}")
    return t


# -- the curve -----------------------------------------------------------------------------------

class Curve(nn.Module):
    """A curve from B (t = 0) to A (t = 1) through K − 2 learnable canonical control points.

    `bends[name]` holds the interior control points of canonical parameter `name` stacked
    (K − 2, ...); `ends[name]` holds B and A (fixed). NURBS curves also learn `log_weights` (K,).
    `history` and `fit_info` are filled by `fit_curve`."""

    def __init__(self, model_a: nn.Module, model_b: nn.Module, kind: str = "bezier", num_bends: int = 3,
                 symmetry: Symmetry | None = None):
        super().__init__()
        self.degree = curve_degree(kind, num_bends)
        self.kind, self.num_bends = kind, num_bends
        a, b = canonicalize(model_a), canonicalize(model_b)
        if symmetry is not None:
            b = symmetry.apply(b)
        check_compatible(a, b, what="the curve's endpoints")
        pa, pb = a.params(), b.params()
        if pa["qk"].dtype != pb["qk"].dtype:
            raise TypeError(f"endpoints have different dtypes ({pa['qk'].dtype} vs {pb['qk'].dtype}); cast one")
        self.config: CanonicalConfig = a.config
        self.register_buffer("knots", clamped_knots(num_bends, self.degree))
        inner = greville(self.knots, self.degree)[1:-1]
        self.ends = nn.ParameterDict({k: nn.Parameter(torch.stack([pb[k], v]).detach().clone(), requires_grad=False)
                                      for k, v in pa.items()})
        self.bends = nn.ParameterDict({
            k: nn.Parameter(torch.stack([torch.lerp(pb[k].detach(), v.detach(), x) for x in inner]))
            for k, v in pa.items()})
        self.log_weights = nn.Parameter(torch.zeros(num_bends, dtype=torch.float64)) if kind == "nurbs" else None
        self.history: dict[str, list] = {}
        self.fit_info: dict[str, Any] = {}

    def coefficients(self, ts: Tensor | Sequence[float] | float) -> Tensor:
        """(E, K) float64 coefficients c_k(t), rows summing to 1 (differentiable in the NURBS weights)."""
        t = check_ts(ts).to(self.knots.device)
        basis = bspline_basis(t, self.knots, self.degree)
        if self.log_weights is None:
            return basis
        weighted = basis * self.log_weights.exp()
        return weighted / weighted.sum(-1, keepdim=True)

    def params_at(self, ts: Tensor | Sequence[float] | float) -> dict[str, Tensor]:
        """Canonical parameters of the points θ(t) stacked along a leading axis E (an ensemble
        for `canonical_forward`). Each is Σ_k c_k θ_k summed term by term: a one-hot c gives the
        control point itself, bit for bit."""
        coef = self.coefficients(ts)
        out = {}
        for name, ends in self.ends.items():
            c = coef.to(ends.dtype).reshape(*coef.shape, *([1] * (ends.dim() - 1)))
            value = c[:, 0] * ends[0]
            for k in range(self.num_bends - 2):
                value = value + c[:, k + 1] * self.bends[name][k]
            out[name] = value + c[:, -1] * ends[1]
        return out

    def point(self, t: float) -> CanonicalTransformer:
        """The model at θ(t), as a (detached) canonical model."""
        with torch.no_grad():
            params = self.params_at([t])
        return CanonicalTransformer(self.config, {k: v[0] for k, v in params.items()})

    def control_points(self) -> list[CanonicalTransformer]:
        """θ_0 = B, the bends, θ_{K−1} = A, as canonical models."""
        points = [{k: v[0] for k, v in self.ends.items()}]
        points += [{k: v[i].detach() for k, v in self.bends.items()} for i in range(self.num_bends - 2)]
        points.append({k: v[1] for k, v in self.ends.items()})
        return [CanonicalTransformer(self.config, p) for p in points]

    def bend_offsets(self) -> list[float]:
        """How far each bend left the line: ‖θ_k − line(ξ_k)‖ / ‖θ_A − θ_B‖ over all canonical
        parameters (0 for an untrained curve)."""
        xs = greville(self.knots, self.degree)[1:-1]
        span = math.sqrt(sum(float((e[1] - e[0]).double().square().sum()) for e in self.ends.values()))
        out = []
        for i, x in enumerate(xs):
            sq = sum(float((self.bends[k][i].detach() - torch.lerp(e[0], e[1], x)).double().square().sum())
                     for k, e in self.ends.items())
            out.append(math.sqrt(sq) / max(span, torch.finfo(torch.float64).tiny))
        return out

    def extra_repr(self) -> str:
        return f"kind={self.kind}, num_bends={self.num_bends}, degree={self.degree}"


# -- training ------------------------------------------------------------------------------------

def cross_entropy(logits: Tensor, inputs: Tensor, targets: Tensor | None, ts: Tensor) -> Tensor:
    """Default objective: mean cross-entropy of each point (next-token when targets is None),
    averaged over the E points."""
    losses = []
    for member in logits:
        total, _, count = loss_and_correct(member, inputs, targets)
        losses.append(total / count)
    return torch.stack(losses).mean()


def _cycle(data: Data) -> Iterator[Batch]:
    """Batches of `data` forever (an iterable is iterated again when it ends)."""
    while True:
        empty = True
        for batch in as_batches(data):
            empty = False
            yield batch
        if empty:
            raise ValueError("no data: `data` yielded no batches")


def weight_decay_term(params: Mapping[str, Tensor]) -> Tensor:
    """Σ ‖θ‖² over the weight matrices (DECAY_PARAMS present), averaged over the E points."""
    total = sum(params[k].float().square().flatten(1).sum(1) for k in DECAY_PARAMS if k in params)
    return total.mean()


def fit_curve(
    model_a: nn.Module,
    model_b: nn.Module,
    data: Data,
    kind: str = "bezier",
    num_bends: int = 3,
    *,
    steps: int = 200,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    symmetry: Symmetry | None = None,
    objective: Objective | None = None,
    points_per_step: int = 1,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> Curve:
    """Train a curve of `kind` from B (t = 0) to A (t = 1) on `data` (batches of (inputs,
    targets), targets None for language models; iterated again as often as `steps` needs).

    Per step: `points_per_step` values t ~ U(0, 1) (seeded), one ensemble forward at θ(t),
    loss = objective(logits, inputs, targets, ts) + 0.5 · weight_decay · ‖θ(t)‖² (weight
    matrices, averaged over the points); Adam at `lr` with a cosine decay to 0. `symmetry` is
    applied to canonical B first (an `Alignment.symmetry`). The curve's `history` holds the
    loss per step, `fit_info` the steps and the wall time. `progress`: a bar on the terminal
    (`lmc_core.progress`), never in a notebook."""
    if steps < 1 or points_per_step < 1:
        raise ValueError(f"steps ({steps}) and points_per_step ({points_per_step}) must be ≥ 1")
    curve = Curve(model_a, model_b, kind, num_bends, symmetry)
    device = torch.device(device) if device is not None else curve.ends["qk"].device
    curve.to(device)
    objective = objective or cross_entropy
    optimizer = torch.optim.Adam([p for p in curve.parameters() if p.requires_grad], lr=lr)
    scheduler = make_scheduler(optimizer, "cosine", lr, steps, 0)
    generator = torch.Generator().manual_seed(seed)
    losses, sampled = [], []
    start = time.perf_counter()
    batches = _cycle(data)
    bar = progress_bar(total=steps, desc=f"{kind} curve", unit="step", disable=not progress, leave=False)
    for _ in range(steps):
        inputs, targets = next(batches)
        inputs = inputs.to(device)
        targets = None if targets is None else targets.to(device)
        ts = torch.rand(points_per_step, generator=generator, dtype=torch.float64)
        params = curve.params_at(ts)
        with autocast_context(device):
            logits = canonical_forward(params, curve.config, inputs)
        loss = objective(logits, inputs, targets, ts.to(device))
        if weight_decay:
            loss = loss + 0.5 * weight_decay * weight_decay_term(params)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.detach())
        sampled.append(ts.tolist())
        bar.update()
    bar.close()
    curve.history = {"loss": torch.stack(losses).tolist(), "t": sampled}
    curve.fit_info = {"kind": kind, "num_bends": num_bends, "steps": steps, "points_per_step": points_per_step,
                      "lr": lr, "weight_decay": weight_decay, "wall_s": time.perf_counter() - start}
    return curve.eval()


# -- the barrier along the curve -----------------------------------------------------------------

def curve_points(curve: Curve, ts: Sequence[float]) -> list[CanonicalTransformer]:
    """The models at θ(t) for every t (one batched evaluation of the coefficients)."""
    with torch.no_grad():
        params = curve.params_at(list(ts))
    return [CanonicalTransformer(curve.config, {k: v[e] for k, v in params.items()}) for e in range(len(ts))]


def curve_barrier(
    curve: Curve,
    data: Data,
    ts: int | Sequence[float] = 11,
    *,
    device: torch.device | str | None = None,
    max_ensemble: int | None = None,
    autocast: bool | None = None,
    progress: bool = False,
    strategy: str = "auto",
) -> BarrierResult:
    """`barrier` along the curve: B_t = L[θ(t)] − (t L_A + (1 − t) L_B) on the grid `ts` (an int
    n: n evenly spaced points; a sequence must contain 0 and 1). Every point is one member of
    one ensemble pass per batch on CUDA, one point at a time on CPU (the barrier engine's
    `strategy`); `lambdas` of the result are the t.

    The points go to the engine as dense circuits, not factored: a trained bend's QK/OV
    circuits can have rank above head_dim, where factoring could only fail."""
    grid = lambda_grid(ts)
    params = {k: v.detach() for k, v in curve.params_at(grid).items()}
    device = torch.device(device or curve.ends["qk"].device)
    loop = pick_strategy(strategy, device, max_ensemble) == "loop"  # one point at a time (CPU)
    losses, accs = ensemble_metrics(curve.config, params, data, device=device,
                                     max_ensemble=1 if loop else max_ensemble, autocast=autocast,
                                     progress=progress)
    return BarrierResult(grid, losses, accs, "canonical")
