"""Trained curves (lmc_core.curves): the basis against independent formulas (Bernstein, hat
functions, scipy's B-splines), the curve against the line, exact ends, a planted bend
recovered by `fit_curve`, weight-space curves (Garipov's) against the raw line and the
architecture's head rank, EXTRA's start and loss guard, and clear errors for bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import make_gpt2, make_vit, single_thread, vit_images  # noqa: F401  (autouse fixture)
from scipy.interpolate import BSpline

from lmc_core.adapters import canonicalize
from lmc_core.canonical import canonical_forward
from lmc_core.curves import (
    KINDS,
    Curve,
    WeightCurve,
    bspline_basis,
    clamped_knots,
    curve_barrier,
    curve_degree,
    fit_curve,
    greville,
)
from lmc_core.interpolation import BarrierResult, barrier, interpolate
from lmc_core.symmetry import Permutation

TS = torch.linspace(0, 1, 41, dtype=torch.float64)
TINY = dict(depth=1, width=8, heads=2, img_size=8, patch_size=4, num_classes=3)


def bernstein(ts: torch.Tensor, n: int) -> torch.Tensor:
    return torch.stack([math.comb(n, k) * ts**k * (1 - ts) ** (n - k) for k in range(n + 1)], dim=1)


def pair(dtype: torch.dtype = torch.float64, **kwargs):
    return canonicalize(make_vit(dtype=dtype, seed=1, **kwargs)), canonicalize(make_vit(dtype=dtype, seed=2, **kwargs))


def perturbed(curve: Curve, seed: int = 0) -> Curve:
    """Move every bend (and NURBS weight) off the line, so nothing holds by accident."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in curve.bends.values():
            p.add_(torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype))
        if curve.log_weights is not None:
            curve.log_weights.copy_(torch.randn(curve.num_bends, generator=g, dtype=torch.float64))
    return curve


# -- the basis -----------------------------------------------------------------------------------

@pytest.mark.parametrize("num_bends", [3, 4, 5, 6])
def test_bezier_basis_is_bernstein(num_bends):
    knots = clamped_knots(num_bends, num_bends - 1)
    basis = bspline_basis(TS, knots, num_bends - 1)
    assert (basis - bernstein(TS, num_bends - 1)).abs().max() < 1e-12


@pytest.mark.parametrize("num_bends", [3, 4, 7])
def test_polychain_basis_is_piecewise_linear(num_bends):
    basis = bspline_basis(TS, clamped_knots(num_bends, 1), 1)
    nodes = np.linspace(0, 1, num_bends)
    for k in range(num_bends):  # hat function of node k, by numpy's linear interpolation
        hat = np.interp(TS.numpy(), nodes, np.eye(num_bends)[k])
        assert np.abs(basis[:, k].numpy() - hat).max() < 1e-12


@pytest.mark.parametrize("num_bends", [5, 6, 8])
def test_cubic_basis_matches_scipy_with_t_equal_1(num_bends):
    knots = clamped_knots(num_bends, 3)
    ours = bspline_basis(TS, knots, 3)
    # scipy's design matrix includes the last knot (extrapolate=False puts it in the last span)
    ref = BSpline.design_matrix(TS.numpy(), knots.numpy(), 3).toarray()
    assert np.abs(ours.numpy() - ref).max() < 1e-12
    assert ours[-1, -1].item() == 1.0  # EXTRA's half-open spans give 0 here


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("num_bends", [3, 4, 5, 6])
def test_coefficients_partition_unity_exact_ends_and_reproduce_the_line(kind, num_bends):
    a, b = pair(**TINY)
    curve = Curve(a, b, kind, num_bends)
    coef = curve.coefficients(TS)
    assert coef.shape == (len(TS), num_bends)
    assert (coef.sum(1) - 1).abs().max() < 1e-12 and coef.min() >= 0
    xi = torch.tensor(greville(curve.knots, curve.degree), dtype=torch.float64)
    assert (coef @ xi - TS).abs().max() < 1e-12  # linear precision at the Greville abscissae
    perturbed(curve)
    coef = curve.coefficients([0.0, 1.0])
    assert torch.equal(coef, torch.eye(num_bends, dtype=torch.float64)[[0, -1]])


@pytest.mark.parametrize("num_bends", [3, 4, 5, 7])
def test_nurbs_with_equal_weights_is_the_bspline(num_bends):
    a, b = pair(**TINY)
    curve = Curve(a, b, "nurbs", num_bends)
    with torch.no_grad():
        curve.log_weights.fill_(0.7)  # equal, not 1
    coef = curve.coefficients(TS)
    degree = min(3, num_bends - 1)
    assert curve.degree == degree
    assert (coef - bspline_basis(TS, clamped_knots(num_bends, degree), degree)).abs().max() < 1e-12
    if num_bends <= 4:  # one segment: the Bézier curve
        assert (coef - bernstein(TS, num_bends - 1)).abs().max() < 1e-12
    with torch.no_grad():  # unequal weights pull the curve towards the heavier control point
        curve.log_weights[1] = 2.0
    assert (curve.coefficients([0.3])[0, 1] > bspline_basis(torch.tensor([0.3]), curve.knots, degree)[0, 1] + 0.05)


# -- the curve against the line ------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("num_bends", [3, 5])
def test_untrained_curve_is_the_line(kind, num_bends):
    a, b = pair(torch.float32, **TINY)
    curve = Curve(a, b, kind, num_bends)
    for t in (0.0, 0.13, 0.5, 0.77, 1.0):
        line = interpolate(a, b, t).params()
        point = curve.point(t).params()
        for name, value in line.items():
            scale = value.abs().max().item() + 1e-30
            assert (point[name] - value).abs().max().item() / scale < 1e-6, (kind, t, name)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("arch", ["vit", "gpt2"])
def test_ends_are_the_models_bit_for_bit(kind, arch):
    make = make_vit if arch == "vit" else make_gpt2
    raw_a, raw_b = make(seed=1), make(seed=2)
    curve = perturbed(Curve(raw_a, raw_b, kind, 4))
    for t, model in ((0.0, raw_b), (1.0, raw_a)):
        point = curve.point(t).params()
        for name, value in canonicalize(model).params().items():
            assert torch.equal(point[name], value), (kind, t, name)


def test_symmetry_is_applied_to_b_first():
    a, b = pair(**TINY)
    perm = Permutation.random(b.config, torch.Generator().manual_seed(3))
    curve = perturbed(Curve(a, b, "bezier", 3, symmetry=perm))
    expected = perm.apply(b).params()
    assert all(torch.equal(curve.point(0.0).params()[k], v) for k, v in expected.items())


@pytest.mark.parametrize("kind", KINDS)
def test_curve_barrier_of_the_untrained_curve_is_the_line_barrier(kind):
    a, b = pair(**TINY)
    g = torch.Generator().manual_seed(5)
    data = [(vit_images(make_vit(**TINY), batch=6, seed=i), torch.randint(0, 3, (6,), generator=g)) for i in range(2)]
    line = barrier(a, b, data, lambdas=5)
    result = curve_barrier(Curve(a, b, kind, 4), data, ts=5)
    assert isinstance(result, BarrierResult) and result.lambdas == line.lambdas
    assert max(abs(x - y) for x, y in zip(result.losses, line.losses, strict=True)) < 1e-9
    assert result.loss_excess[0] == 0.0 and result.loss_excess[-1] == 0.0
    assert result.loss_a == pytest.approx(line.loss_a, abs=1e-9) and result.loss_b == pytest.approx(line.loss_b, abs=1e-9)


# -- fitting -------------------------------------------------------------------------------------

def test_fit_recovers_a_planted_bend():
    """Distillation from a planted curve: the targets at t are the logits of a Bézier whose bend
    is a third, unrelated model. The fitted curve must match the planted path's function far
    better than the line does, in the middle where the bend pulls hardest."""
    a, b = pair(torch.float32, **TINY)
    planted = Curve(a, b, "bezier", 3)
    with torch.no_grad():
        for name, value in canonicalize(make_vit(seed=9, **TINY)).params().items():
            planted.bends[name][0] = value
    images = vit_images(make_vit(**TINY), batch=32, seed=0)

    def distill(logits, inputs, targets, ts):
        with torch.no_grad():
            teacher = canonical_forward(planted.params_at(ts), planted.config, inputs)
        return F.mse_loss(logits, teacher)

    curve = fit_curve(a, b, (images, None), "bezier", 3, steps=300, lr=1e-2, objective=distill, seed=0)
    assert len(curve.history["loss"]) == 300 and curve.fit_info["steps"] == 300

    def error(model) -> float:
        with torch.no_grad():
            return (model(images) - planted.point(0.5)(images)).square().mean().item()
    assert error(curve.point(0.5)) < 0.05 * error(interpolate(a, b, 0.5))
    assert curve.bend_offsets()[0] > 0.1  # it left the line to get there


def test_fit_lowers_the_training_loss_inside_the_path():
    """Two unrelated models and random labels: every interior point of the fitted curve fits
    the batch far better than the line's point at the same t (the ends stay where they are)."""
    a, b = pair(torch.float32, **TINY)
    images = vit_images(make_vit(**TINY), batch=48, seed=0)
    data = (images, torch.randint(0, 3, (48,), generator=torch.Generator().manual_seed(0)))
    line = barrier(a, b, data, lambdas=5)
    result = curve_barrier(fit_curve(a, b, data, "bezier", 3, steps=60, lr=1e-2, weight_decay=1e-4), data, ts=5)
    assert result.losses[0] == pytest.approx(line.losses[0], abs=1e-5)
    assert result.losses[-1] == pytest.approx(line.losses[-1], abs=1e-5)
    assert all(c < l - 0.3 for c, l in zip(result.losses[1:-1], line.losses[1:-1], strict=True))


def test_fit_trains_a_language_model_curve():
    """Next-token targets (None) through the default objective: a few NURBS steps move both the
    bends and the weights, and the loss along the curve drops below the line's in the middle."""
    a, b = make_gpt2(seed=1), make_gpt2(seed=2)
    ids = torch.randint(0, a.config.vocab_size, (8, 10), generator=torch.Generator().manual_seed(0))
    curve = fit_curve(a, b, [(ids, None)], "nurbs", 4, steps=30, lr=1e-2)
    assert len(curve.history["loss"]) == 30 and min(curve.bend_offsets()) > 0
    assert not torch.equal(curve.log_weights.detach(), torch.zeros(4, dtype=torch.float64))
    line = barrier(canonicalize(a), canonicalize(b), [(ids, None)], lambdas=3)  # where the curve started
    assert curve_barrier(curve, [(ids, None)], ts=3).losses[1] < line.losses[1] - 0.1


# -- bad input -----------------------------------------------------------------------------------

def test_bad_inputs_give_clear_errors():
    a, b = pair(**TINY)
    wide = canonicalize(make_vit(seed=3, **{**TINY, "width": 12}))
    with pytest.raises(ValueError, match="different architectures"):
        Curve(a, wide)
    with pytest.raises(ValueError, match="unknown curve kind 'spline'; valid kinds: bezier, nurbs, polychain"):
        Curve(a, b, "spline")
    with pytest.raises(ValueError, match="at least 3 control points"):
        curve_degree("bezier", 2)
    curve = Curve(a, b, "nurbs", 5)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
            curve.point(bad)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        curve_barrier(curve, [], ts=[0.0, 1.2, 1.0])
    with pytest.raises(ValueError, match="must contain both 0 and 1"):
        curve_barrier(curve, [], ts=[0.2, 1.0])
    with pytest.raises(ValueError, match="steps"):
        fit_curve(a, b, [], steps=0)
    with pytest.raises(ValueError, match="no data"):
        fit_curve(a, b, [], steps=1)


# -- weight-space curves (Garipov's) and EXTRA's start ------------------------------------------

def test_weight_curve_untrained_is_the_raw_line_and_ends_are_the_models():
    """An untrained weight-space curve is the line through the raw weights (the vanilla path):
    its barrier matches `barrier` of the raw models, and its ends are the models bit for bit."""
    a, b = make_vit(seed=1, **TINY), make_vit(seed=2, **TINY)
    g = torch.Generator().manual_seed(5)
    data = [(vit_images(make_vit(**TINY), batch=6, seed=i), torch.randint(0, 3, (6,), generator=g)) for i in range(2)]
    for kind in KINDS:
        curve = WeightCurve(a, b, kind, 4)
        result, line = curve_barrier(curve, data, ts=5), barrier(a, b, data, lambdas=5)
        assert max(abs(x - y) for x, y in zip(result.losses, line.losses, strict=True)) < 1e-5, kind
        with torch.no_grad():
            for bend in curve.bends:
                bend.add_(torch.randn(bend.shape, generator=g))
        for t, model in ((0.0, b), (1.0, a)):
            point = curve.point(t)
            assert type(point) is type(a)
            assert all(torch.equal(point.get_parameter(k), v) for k, v in model.named_parameters()), (kind, t)


def test_weight_curve_points_keep_the_architectures_head_rank_canonical_bends_do_not():
    """Every point of a weight-space curve is a ViT: each head's QK circuit has rank ≤ head_dim.
    A canonical curve's bend mixes circuits and reaches beyond it (what the chapter measures)."""
    a, b = make_vit(seed=1, dtype=torch.float64, **TINY), make_vit(seed=2, dtype=torch.float64, **TINY)
    head_dim = TINY["width"] // TINY["heads"]

    def max_rank(model) -> int:  # float64 throughout: round-off singular values ~1e-16, far below rtol
        qk = canonicalize(model).params()["qk"]  # (layers, heads, d + 1, d + 1)
        return int(torch.linalg.matrix_rank(qk.flatten(0, -3), rtol=1e-9).max())
    weight_curve = WeightCurve(a, b, "bezier", 3)
    with torch.no_grad():
        weight_curve.bends[0].add_(1.0)  # the first parameter (cls token), and others below
        for bend in weight_curve.bends:
            bend.mul_(1.5)
    assert max_rank(weight_curve.point(0.5)) <= head_dim + 1  # + 1: the bias slot of the circuit
    canonical = Curve(a, b, "bezier", 3)
    assert max_rank(canonical.point(0.5)) > head_dim + 1  # the line's midpoint already mixes two models' heads


def test_fit_trains_a_weight_curve_and_the_guard_skips_steps():
    a, b = make_vit(seed=1, **TINY), make_vit(seed=2, **TINY)
    images = vit_images(make_vit(**TINY), batch=48, seed=0)
    data = (images, torch.randint(0, 3, (48,), generator=torch.Generator().manual_seed(0)))
    line = barrier(a, b, data, lambdas=5)
    curve = fit_curve(a, b, data, "bezier", 3, steps=60, lr=3e-2, weight_decay=1e-4, space="weights")
    assert isinstance(curve, WeightCurve) and curve.fit_info["space"] == "weights" and curve.fit_info["skipped"] == 0
    result = curve_barrier(curve, data, ts=5)
    assert result.losses[0] == pytest.approx(line.losses[0], abs=1e-5)
    assert all(c < l - 0.3 for c, l in zip(result.losses[1:-1], line.losses[1:-1], strict=True))
    guarded = fit_curve(a, b, data, "bezier", 3, steps=5, lr=1e-2, space="weights", skip_loss_above=0.0)
    assert guarded.fit_info["skipped"] == 5 and guarded.bend_offsets() == [0.0]  # every step skipped: still the line


def test_extra_start_and_weightings():
    """EXTRA's start: bends at given models, unconstrained weights from init_weights; weights
    fixed at 1 give the B-spline whatever happens."""
    a, b = pair(**TINY)
    bends = [make_vit(seed=s, **TINY) for s in (7, 8, 9)]
    start = [0.2, 0.5, 0.3, 0.9, 0.1]
    curve = Curve(a, b, "nurbs", 5, bends=bends, weights="raw", init_weights=start)
    for k, model in enumerate(bends):
        assert all(torch.equal(curve.bends[n][k], v) for n, v in canonicalize(model).params().items())
    basis = bspline_basis(TS, curve.knots, 3)
    expected = basis * torch.tensor(start, dtype=torch.float64)
    assert (curve.coefficients(TS) - expected / expected.sum(1, keepdim=True)).abs().max() < 1e-12
    fixed = Curve(a, b, "nurbs", 5, weights="fixed")
    assert fixed.log_weights is None and not [p for p in fixed.parameters() if p.dim() == 1 and p.requires_grad]
    assert (fixed.coefficients(TS) - basis).abs().max() < 1e-12
    with pytest.raises(ValueError, match="only NURBS curves have weights"):
        Curve(a, b, "bezier", 3, weights="raw")
    with pytest.raises(ValueError, match="positive unless weights='raw'"):
        Curve(a, b, "nurbs", 5, init_weights=[1.0, -1.0, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="has 3 interior ones; got 1"):
        Curve(a, b, "nurbs", 5, bends=bends[:1])
    with pytest.raises(ValueError, match="valid: log, raw, fixed"):
        Curve(a, b, "nurbs", 5, weights="free")


def test_weight_curve_bad_inputs():
    a, b = make_vit(seed=1, **TINY), make_vit(seed=2, **TINY)
    with pytest.raises(TypeError, match="two models of one class"):
        WeightCurve(a, make_gpt2(seed=1))
    with pytest.raises(ValueError, match="differ in names or shapes"):
        WeightCurve(a, make_vit(seed=3, **{**TINY, "width": 12}))
    with pytest.raises(ValueError, match="takes no symmetry"):
        fit_curve(a, b, [], space="weights", symmetry=Permutation.random(canonicalize(b).config))
    with pytest.raises(ValueError, match="space = 'raw'"):
        fit_curve(a, b, [], space="raw")


def test_weight_curve_of_a_language_model():
    """HF GPT-2 (tied embedding and head): the untrained weight-space curve is the raw line, a few
    steps lower the middle of the path, and the points are GPT-2s again."""
    a, b = make_gpt2(seed=1), make_gpt2(seed=2)
    ids = torch.randint(0, a.config.vocab_size, (8, 10), generator=torch.Generator().manual_seed(0))
    line = barrier(a, b, [(ids, None)], lambdas=3)
    untrained = curve_barrier(WeightCurve(a, b, "bezier", 3), [(ids, None)], ts=3)
    assert max(abs(x - y) for x, y in zip(untrained.losses, line.losses, strict=True)) < 1e-5
    curve = fit_curve(a, b, [(ids, None)], "bezier", 3, steps=20, lr=1e-2, space="weights")
    assert type(curve.point(0.5)) is type(a)
    assert curve_barrier(curve, [(ids, None)], ts=3).losses[1] < line.losses[1] - 0.1
