"""Trained curves between two models: Bézier and polygonal chains (Garipov et al. 2018) and
NURBS (EXTRA, NeurIPS 2025), in canonical form or in the model's own weights, and their barriers.

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
averages), where every kind reproduces the line: the untrained curve is the line (or at
given models: EXTRA's code starts them at fresh initialisations, and its NURBS weights at
U(0, 1) with no positivity constraint; `Curve(bends=..., weights="raw", init_weights=...)`).

Two spaces for the control points: `Curve` holds canonical circuits (a bend's QK and OV may
reach rank up to the width, beyond any model of the original class), `WeightCurve` holds the
model's own weights, as Garipov's code (timgaripov/dnn-mode-connectivity, curves.py: every
layer's weight and bias has one copy per bend), so every point is an ordinary model with heads
of the architecture's rank. Both are evaluated through the canonical form.

Training (`fit_curve`): per batch draw t ~ U(0, 1) (or several t, for an objective that
compares points, like EXTRA's order-aware term), evaluate the model at θ(t) with the ensemble
forward of the barrier engine, minimise its loss plus 0.5 · wd · ‖θ(t)‖² over the weight
matrices (Garipov's weight decay on the point; here on canonical matrices), with Adam and a
cosine schedule. `curve_barrier` is `barrier`'s definition along t instead of λ.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .adapters import canonicalize
from .canonical import CanonicalConfig, CanonicalTransformer, canonical_forward, check_compatible
from .engine import Batch, Data, as_batches, ensemble_metrics, pick_strategy
from .interpolation import BarrierResult, lambda_grid
from .metrics import autocast_context, is_hf_model, loss_and_correct
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


# -- the curves ----------------------------------------------------------------------------------

WEIGHTINGS = ("log", "raw", "fixed")  # how a NURBS curve holds its weights (`Curve`)


class _Spline(nn.Module):
    """What every curve shares: the clamped knots, the degree, the NURBS weights and the
    coefficients c_k(t). Subclasses hold the control points and evaluate the model at θ(t)."""

    def _init_spline(self, kind: str, num_bends: int, weights: str, init_weights: Sequence[float] | None) -> None:
        self.degree = curve_degree(kind, num_bends)
        self.kind, self.num_bends = kind, num_bends
        if weights not in WEIGHTINGS:
            raise ValueError(f"weights = {weights!r}; valid: {', '.join(WEIGHTINGS)} (log: learned w = exp(ρ) > 0; "
                             "raw: learned w = ρ unconstrained, as EXTRA's code; fixed: w = 1, the B-spline)")
        if kind != "nurbs" and (weights != "log" or init_weights is not None):
            raise ValueError(f"only NURBS curves have weights; a {kind} curve takes neither `weights` nor `init_weights`")
        if weights == "fixed" and init_weights is not None:
            raise ValueError("weights='fixed' keeps every weight at 1: drop init_weights")
        start = torch.ones(num_bends, dtype=torch.float64) if init_weights is None else \
            torch.as_tensor(init_weights, dtype=torch.float64).reshape(-1)
        if len(start) != num_bends or (weights != "raw" and bool((start <= 0).any())):
            raise ValueError(f"init_weights needs {num_bends} values (one per control point), positive unless "
                             f"weights='raw'; got {start.tolist()}")
        self.weighting = weights if kind == "nurbs" else None
        self.log_weights = nn.Parameter(start.log()) if self.weighting == "log" else None
        self.raw_weights = nn.Parameter(start.clone()) if self.weighting == "raw" else None
        self.register_buffer("knots", clamped_knots(num_bends, self.degree))
        self.history: dict[str, list] = {}
        self.fit_info: dict[str, Any] = {}

    def weights(self) -> Tensor | None:
        """The NURBS weights w_k (K,), float64; None for Bézier and polychain curves."""
        if self.weighting is None:
            return None
        if self.weighting == "fixed":
            return torch.ones(self.num_bends, dtype=torch.float64, device=self.knots.device)
        return self.log_weights.exp() if self.weighting == "log" else self.raw_weights

    def coefficients(self, ts: Tensor | Sequence[float] | float) -> Tensor:
        """(E, K) float64 coefficients c_k(t), rows summing to 1 (differentiable in the NURBS weights)."""
        t = check_ts(ts).to(self.knots.device)
        basis = bspline_basis(t, self.knots, self.degree)
        weights = self.weights()
        if weights is None or self.weighting == "fixed":
            return basis
        weighted = basis * weights
        return weighted / weighted.sum(-1, keepdim=True)

    def _mix(self, ends: Tensor, bends: Tensor | Sequence[Tensor], coef: Tensor) -> Tensor:
        """Σ_k c_k θ_k for one parameter, stacked over the E rows of `coef`, summed term by term
        so that a one-hot c gives the control point itself, bit for bit."""
        c = coef.to(ends.dtype).reshape(*coef.shape, *([1] * (ends.dim() - 1)))
        value = c[:, 0] * ends[0]
        for k in range(self.num_bends - 2):
            value = value + c[:, k + 1] * bends[k]
        return value + c[:, -1] * ends[1]

    def _offsets(self, pairs: Sequence[tuple[Tensor, Tensor]]) -> list[float]:
        """‖θ_k − line(ξ_k)‖ / ‖θ_A − θ_B‖ per bend over (ends, bends) of every parameter."""
        xs = greville(self.knots, self.degree)[1:-1]
        span = math.sqrt(sum(float((e[1] - e[0]).double().square().sum()) for e, _ in pairs))
        out = []
        for i, x in enumerate(xs):
            sq = sum(float((b[i].detach() - torch.lerp(e[0], e[1], x)).double().square().sum()) for e, b in pairs)
            out.append(math.sqrt(sq) / max(span, torch.finfo(torch.float64).tiny))
        return out

    def extra_repr(self) -> str:
        weights = f", weights={self.weighting}" if self.weighting else ""
        return f"kind={self.kind}, num_bends={self.num_bends}, degree={self.degree}{weights}"


def _start_bends(pb: Mapping[str, Tensor], pa: Mapping[str, Tensor], inner: Sequence[float],
                 bends: Sequence[Mapping[str, Tensor]] | None) -> dict[str, Tensor]:
    """Initial interior control points: the line at the Greville abscissae `inner`, or `bends`."""
    if bends is None:
        return {k: torch.stack([torch.lerp(pb[k].detach(), v.detach(), x) for x in inner]) for k, v in pa.items()}
    if len(bends) != len(inner):
        raise ValueError(f"bends: a curve with {len(inner) + 2} control points has {len(inner)} interior ones; "
                         f"got {len(bends)} models")
    for i, point in enumerate(bends):
        bad = [k for k, v in pa.items() if k not in point or point[k].shape != v.shape]
        if bad:
            raise ValueError(f"bends[{i}] does not match the endpoints' structure (parameters {bad[:3]}): build it "
                             "with the same architecture")
    return {k: torch.stack([p[k].detach().to(v.dtype) for p in bends]) for k, v in pa.items()}


class Curve(_Spline):
    """A curve from B (t = 0) to A (t = 1) through K − 2 learnable canonical control points.

    `bends[name]` holds the interior control points of canonical parameter `name` stacked
    (K − 2, ...); `ends[name]` holds B and A (fixed). NURBS curves learn their weights
    (`weights`: "log", w = exp(ρ) > 0, the default; "raw", w unconstrained as EXTRA's code;
    "fixed", w = 1, the B-spline of the same knots), starting at `init_weights` (default 1).
    `bends`: models (raw or canonical) to start the interior control points at instead of the
    line (EXTRA's code starts them at fresh initialisations). `history` and `fit_info` are
    filled by `fit_curve`."""

    def __init__(self, model_a: nn.Module, model_b: nn.Module, kind: str = "bezier", num_bends: int = 3,
                 symmetry: Symmetry | None = None, *, bends: Sequence[nn.Module] | None = None,
                 weights: str = "log", init_weights: Sequence[float] | None = None):
        super().__init__()
        self._init_spline(kind, num_bends, weights, init_weights)
        a, b = canonicalize(model_a), canonicalize(model_b)
        if symmetry is not None:
            b = symmetry.apply(b)
        check_compatible(a, b, what="the curve's endpoints")
        pa, pb = a.params(), b.params()
        if pa["qk"].dtype != pb["qk"].dtype:
            raise TypeError(f"endpoints have different dtypes ({pa['qk'].dtype} vs {pb['qk'].dtype}); cast one")
        self.config: CanonicalConfig = a.config
        inner = greville(self.knots, self.degree)[1:-1]
        start = _start_bends(pb, pa, inner, None if bends is None else [canonicalize(m).params() for m in bends])
        self.ends = nn.ParameterDict({k: nn.Parameter(torch.stack([pb[k], v]).detach().clone(), requires_grad=False)
                                      for k, v in pa.items()})
        self.bends = nn.ParameterDict({k: nn.Parameter(v.clone()) for k, v in start.items()})

    def params_at(self, ts: Tensor | Sequence[float] | float) -> dict[str, Tensor]:
        """Canonical parameters of the points θ(t) stacked along a leading axis E (an ensemble
        for `canonical_forward`)."""
        coef = self.coefficients(ts)
        return {name: self._mix(ends, self.bends[name], coef) for name, ends in self.ends.items()}

    def canonical_params_at(self, ts: Tensor | Sequence[float] | float) -> dict[str, Tensor]:
        """`params_at`, detached: what the barrier engine evaluates."""
        return {k: v.detach() for k, v in self.params_at(ts).items()}

    def logits(self, params: Mapping[str, Tensor], inputs: Tensor) -> Tensor:
        """(E, B, ...) logits of the E points `params` (from `params_at`) on `inputs`."""
        return canonical_forward(params, self.config, inputs)

    def decay_term(self, params: Mapping[str, Tensor]) -> Tensor:
        """Σ ‖θ‖² over the canonical weight matrices (DECAY_PARAMS), averaged over the points."""
        return weight_decay_term(params)

    def point(self, t: float) -> CanonicalTransformer:
        """The model at θ(t), as a (detached) canonical model."""
        with torch.no_grad():
            params = self.params_at([t])
        return CanonicalTransformer(self.config, {k: v[0] for k, v in params.items()})

    def points(self, ts: Sequence[float]) -> list[CanonicalTransformer]:
        """The models at θ(t) for every t (one batched evaluation of the coefficients)."""
        params = self.canonical_params_at(list(ts))
        return [CanonicalTransformer(self.config, {k: v[e] for k, v in params.items()}) for e in range(len(ts))]

    def control_points(self) -> list[CanonicalTransformer]:
        """θ_0 = B, the bends, θ_{K−1} = A, as canonical models."""
        points = [{k: v[0] for k, v in self.ends.items()}]
        points += [{k: v[i].detach() for k, v in self.bends.items()} for i in range(self.num_bends - 2)]
        points.append({k: v[1] for k, v in self.ends.items()})
        return [CanonicalTransformer(self.config, p) for p in points]

    def bend_offsets(self) -> list[float]:
        """How far each bend left the line: ‖θ_k − line(ξ_k)‖ / ‖θ_A − θ_B‖ over all canonical
        parameters (0 for an untrained curve)."""
        return self._offsets([(e, self.bends[k]) for k, e in self.ends.items()])


class WeightCurve(_Spline):
    """Garipov et al.'s curve as their code has it: the control points are ordinary copies of
    the model's own weights (every `named_parameters` tensor), so each point θ(t) = Σ_k c_k θ_k
    is a model of the original class, with heads of its own rank, and it runs through that
    class's forward (`torch.func.functional_call`). Beside `Curve`, whose control points are
    canonical circuits (a bend's QK and OV of rank up to the width), it measures what the extra
    freedom of canonical bends buys. Evaluation canonicalises each point, so the barrier
    engine measures both kinds the same way.

    The endpoints must be two models of one class and structure (align B first and `export` it
    back to the class when a symmetry is wanted: `lmc_core.export`). Options as `Curve`."""

    def __init__(self, model_a: nn.Module, model_b: nn.Module, kind: str = "bezier", num_bends: int = 3, *,
                 bends: Sequence[nn.Module] | None = None, weights: str = "log",
                 init_weights: Sequence[float] | None = None):
        super().__init__()
        self._init_spline(kind, num_bends, weights, init_weights)
        if type(model_a) is not type(model_b):
            raise TypeError(f"a weight-space curve joins two models of one class; got {type(model_a).__name__} and "
                            f"{type(model_b).__name__} (use Curve for canonical forms)")
        pa, pb = dict(model_a.named_parameters()), dict(model_b.named_parameters())
        if pa.keys() != pb.keys() or any(pa[k].shape != pb[k].shape for k in pa):
            raise ValueError("the endpoints' parameters differ in names or shapes: a weight-space curve needs two "
                             "models of one structure (for different widths, use lift_width and Curve)")
        self.config: CanonicalConfig = canonicalize(model_a).config
        self._template = [copy.deepcopy(model_a).eval()]  # in a list: not a submodule, its weights not trained
        for p in self._template[0].parameters():
            p.requires_grad_(False)
        self.names = list(pa)
        inner = greville(self.knots, self.degree)[1:-1]
        start = _start_bends(pb, pa, inner, None if bends is None else [dict(m.named_parameters()) for m in bends])
        self.ends = nn.ParameterList([nn.Parameter(torch.stack([pb[k], pa[k]]).detach().clone(), requires_grad=False)
                                      for k in self.names])
        self.bends = nn.ParameterList([nn.Parameter(start[k].clone()) for k in self.names])

    def _apply(self, fn: Any, recurse: bool = True) -> WeightCurve:  # .to(device) moves the template too
        super()._apply(fn, recurse)
        self._template[0]._apply(fn, recurse)
        return self

    def params_at(self, ts: Tensor | Sequence[float] | float) -> dict[str, Tensor]:
        """The model's parameters at the points θ(t), by name, stacked along a leading axis E."""
        coef = self.coefficients(ts)
        return {name: self._mix(e, b, coef) for name, e, b in zip(self.names, self.ends, self.bends, strict=True)}

    def logits(self, params: Mapping[str, Tensor], inputs: Tensor) -> Tensor:
        """(E, B, ...) logits: the original class's forward at each of the E points."""
        model = self._template[0]
        hf = is_hf_model(model)
        out = []
        for e in range(len(next(iter(params.values())))):
            point = {k: v[e] for k, v in params.items()}
            result = functional_call(model, point, (), {"input_ids": inputs}) if hf else \
                functional_call(model, point, (inputs,))
            out.append(result.logits if hasattr(result, "logits") else result)
        return torch.stack(out)

    def decay_term(self, params: Mapping[str, Tensor]) -> Tensor:
        """Σ ‖θ‖² over every parameter of the point (Garipov's l2 over each layer's weight and
        bias), averaged over the points."""
        return sum(v.float().square().flatten(1).sum(1) for v in params.values()).mean()

    def points(self, ts: Sequence[float]) -> list[nn.Module]:
        """The models at θ(t): copies of the original class with the point's weights."""
        with torch.no_grad():
            params = self.params_at(list(ts))
        out = []
        for e in range(len(ts)):
            model = copy.deepcopy(self._template[0])
            for name, value in params.items():
                model.get_parameter(name).copy_(value[e])
            out.append(model)
        return out

    def point(self, t: float) -> nn.Module:
        """The model at θ(t), a copy of the original class."""
        return self.points([t])[0]

    def canonical_params_at(self, ts: Tensor | Sequence[float] | float) -> dict[str, Tensor]:
        """The canonical forms of the points, stacked: what the barrier engine evaluates."""
        canon = [canonicalize(m).params() for m in self.points(check_ts(ts).tolist())]
        return {k: torch.stack([c[k].detach() for c in canon]) for k in canon[0]}

    def bend_offsets(self) -> list[float]:
        """How far each bend left the line in the model's own weights, relative to ‖θ_A − θ_B‖."""
        return self._offsets(list(zip(self.ends, self.bends, strict=True)))


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
    space: str = "canonical",
    bends: Sequence[nn.Module] | None = None,
    weights: str = "log",
    init_weights: Sequence[float] | None = None,
    skip_loss_above: float | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> Curve | WeightCurve:
    """Train a curve of `kind` from B (t = 0) to A (t = 1) on `data` (batches of (inputs,
    targets), targets None for language models; iterated again as often as `steps` needs).

    `space`: "canonical" (a `Curve`: control points are canonical circuits) or "weights" (a
    `WeightCurve`: control points are the model's own weights, Garipov's curve; `symmetry` is
    then not accepted: export an aligned B first). `bends`, `weights`, `init_weights`: the
    curve's start (see `Curve`).

    Per step: `points_per_step` values t ~ U(0, 1) (seeded), the points' logits (one ensemble
    forward in canonical space), loss = objective(logits, inputs, targets, ts) + 0.5 ·
    weight_decay · ‖θ(t)‖² (averaged over the points); Adam at `lr` with a cosine decay to 0.
    `skip_loss_above`: a step whose loss exceeds it takes no update (EXTRA's NYUv2 guard: 20);
    the skipped steps are counted in `fit_info["skipped"]`. The curve's `history` holds the
    loss per step, `fit_info` the steps and the wall time. `progress`: a bar on the terminal
    (`lmc_core.progress`), never in a notebook."""
    if steps < 1 or points_per_step < 1:
        raise ValueError(f"steps ({steps}) and points_per_step ({points_per_step}) must be ≥ 1")
    if space == "canonical":
        curve: Curve | WeightCurve = Curve(model_a, model_b, kind, num_bends, symmetry, bends=bends,
                                           weights=weights, init_weights=init_weights)
    elif space == "weights":
        if symmetry is not None:
            raise ValueError("a weight-space curve takes no symmetry: apply it in canonical form and export B back "
                             "to its class (lmc_core.export(aligned.model_b, like=model_b)) first")
        curve = WeightCurve(model_a, model_b, kind, num_bends, bends=bends, weights=weights, init_weights=init_weights)
    else:
        raise ValueError(f"space = {space!r}; valid: 'canonical' (canonical circuits) or 'weights' (the model's own)")
    device = torch.device(device) if device is not None else curve.ends[0 if space == "weights" else "qk"].device
    curve.to(device)
    objective = objective or cross_entropy
    optimizer = torch.optim.Adam([p for p in curve.parameters() if p.requires_grad], lr=lr)
    scheduler = make_scheduler(optimizer, "cosine", lr, steps, 0)
    generator = torch.Generator().manual_seed(seed)
    losses, sampled, skipped = [], [], 0
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
            logits = curve.logits(params, inputs)
        loss = objective(logits, inputs, targets, ts.to(device))
        if weight_decay:
            loss = loss + 0.5 * weight_decay * curve.decay_term(params)
        optimizer.zero_grad(set_to_none=True)
        if skip_loss_above is not None and float(loss.detach()) > skip_loss_above:
            skipped += 1  # as EXTRA's guard: no update, and the schedule does not advance either
        else:
            loss.backward()
            optimizer.step()
            scheduler.step()
        losses.append(loss.detach())
        sampled.append(ts.tolist())
        bar.update()
    bar.close()
    curve.history = {"loss": torch.stack(losses).tolist(), "t": sampled}
    curve.fit_info = {"kind": kind, "num_bends": num_bends, "space": space, "weights": curve.weighting,
                      "steps": steps, "points_per_step": points_per_step, "lr": lr, "weight_decay": weight_decay,
                      "skipped": skipped, "wall_s": time.perf_counter() - start}
    return curve.eval()


# -- the barrier along the curve -----------------------------------------------------------------

def curve_points(curve: Curve | WeightCurve, ts: Sequence[float]) -> list[nn.Module]:
    """The models at θ(t) for every t: canonical models for a `Curve`, models of the original
    class for a `WeightCurve`."""
    return curve.points(ts)


def curve_barrier(
    curve: Curve | WeightCurve,
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
    params = curve.canonical_params_at(grid)
    device = torch.device(device or params["qk"].device)
    loop = pick_strategy(strategy, device, max_ensemble) == "loop"  # one point at a time (CPU)
    losses, accs = ensemble_metrics(curve.config, params, data, device=device,
                                     max_ensemble=1 if loop else max_ensemble, autocast=autocast,
                                     progress=progress)
    return BarrierResult(grid, losses, accs, "canonical")
