"""The barrier engine (lmc_core.interpolation, lmc_core.engine) against plain forwards, on tiny randomized models.

References are computed independently: the model's own forward (timm / HF / canonical module),
then a float64 cross-entropy, one model at a time.
"""

from __future__ import annotations

import copy
import importlib
import json

import pytest
import torch
import torch.nn.functional as F
from helpers import gpt2_ids, make_gpt2, make_vit, raw_logits, vit_images

from lmc_core import SemiPermutation
from lmc_core.adapters import canonicalize
from lmc_core.canonical import FACTOR_KEYS, CanonicalTransformer, canonical_forward, factor_circuits
from lmc_core.engine import _ensemble_params, evaluate_ensemble, pick_strategy
from lmc_core.interpolation import (
    BarrierResult,
    SimplexResult,
    barrier,
    interpolate,
    lambda_grid,
    simplex_barrier,
    simplex_counts,
)

TOL = 1e-5
barrier_module = importlib.import_module("lmc_core.engine")  # how the points are evaluated
ARCHS = ("vit", "gpt2")


def make(arch: str, seed: int, dtype: torch.dtype = torch.float64, **kwargs) -> torch.nn.Module:
    return make_vit(dtype=dtype, seed=seed, **kwargs) if arch == "vit" else make_gpt2(dtype=dtype, seed=seed, **kwargs)


def batches(arch: str, model: torch.nn.Module, n: int = 2) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """n batches: images with labels, or token ids with targets None (language modelling)."""
    out = []
    for i in range(n):
        if arch == "vit":
            g = torch.Generator().manual_seed(100 + i)
            out.append((vit_images(model, batch=6, seed=i), torch.randint(0, 5, (6,), generator=g)))
        else:
            out.append((gpt2_ids(model, batch=3, seed=i), None))
    return out


# Above the engine's logit error (fp64 ~1e-12, fp32 ~1e-6); random logits rarely come this
# close, so the accuracy checks stay strict.
TIE_MARGIN = 1e-4


def _flat_logits(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor | None):
    logits = raw_logits(model, inputs).double()
    if targets is None:
        logits, targets = logits[:, :-1], inputs[:, 1:]
    return logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)


def plain_metrics(model: torch.nn.Module, data) -> tuple[float, float]:
    """Mean cross-entropy and accuracy from the model's own forward, in float64."""
    loss = correct = count = 0.0
    for inputs, targets in data:
        logits, targets = _flat_logits(model, inputs, targets)
        loss += F.cross_entropy(logits, targets, reduction="sum").item()
        correct += (logits.argmax(-1) == targets).sum().item()
        count += targets.numel()
    return loss / count, correct / count


def near_ties(model: torch.nn.Module, data) -> float:
    """Fraction of items whose two largest reference logits lie within TIE_MARGIN: only there may
    another (batched, differently rounded) forward pick another argmax."""
    ties = count = 0
    for inputs, targets in data:
        logits, targets = _flat_logits(model, inputs, targets)
        top = logits.topk(2, dim=-1).values
        ties += int((top[:, 0] - top[:, 1] < TIE_MARGIN).sum())
        count += targets.numel()
    return ties / count


def assert_same_metrics(loss: float, acc: float, model: torch.nn.Module, data) -> None:
    """The engine's loss within TOL of the model's own forward; its accuracy equal up to the items
    on a near-tie (accuracy is an argmax, so it is exact only away from ties)."""
    ref_loss, ref_acc = plain_metrics(model, data)
    assert abs(loss - ref_loss) < TOL
    assert abs(acc - ref_acc) <= near_ties(model, data) + 1e-12


@pytest.fixture(scope="module", params=ARCHS)
def pair(request):
    arch = request.param
    a, b = make(arch, 0), make(arch, 1)
    return arch, a, b, batches(arch, a)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("space", ["raw", "canonical"])
def test_self_barrier_is_exactly_zero(arch, space):
    a = make(arch, 3, dtype=torch.float32)
    if space == "canonical":
        a = canonicalize(a)
    data = batches(arch, make(arch, 3))
    # the loop, one ensemble chunk, and chunks of 3, 3, 1
    for n, strategy, max_ensemble in ((11, "loop", None), (11, "ensemble", None), (7, "ensemble", 3)):
        r = barrier(a, a, data, n, max_ensemble=max_ensemble, strategy=strategy)
        assert r.space == space
        assert r.loss_excess == [0.0] * n and r.acc_excess == [0.0] * n
        assert r.loss_barrier == 0.0 and r.acc_barrier == 0.0


@pytest.mark.parametrize("strategy", ["ensemble", "loop"])
def test_identical_points_share_one_evaluation(monkeypatch, pair, strategy):
    """Equality of losses never rests on a batched forward rounding every member alike: a model
    joined with an identical copy is one point, and a λ listed twice is evaluated once."""
    arch, a, b, data = pair
    sizes = []
    real_ensemble, real_loop = barrier_module.ensemble_metrics, barrier_module._raw_loop_metrics

    def counting_ensemble(config, params, data, **kwargs):
        sizes.append(params["qk"].shape[0])
        return real_ensemble(config, params, data, **kwargs)

    def counting_loop(models, chains, data, **kwargs):
        sizes.append(len(chains))
        return real_loop(models, chains, data, **kwargs)

    monkeypatch.setattr(barrier_module, "ensemble_metrics", counting_ensemble)
    monkeypatch.setattr(barrier_module, "_raw_loop_metrics", counting_loop)
    for x, y in ((a, copy.deepcopy(a)), (canonicalize(a), canonicalize(copy.deepcopy(a)))):
        r = barrier(x, y, data, 11, strategy=strategy)
        assert sizes.pop() == 1 and r.loss_excess == [0.0] * 11 and r.loss_barrier == 0.0
    r = barrier(a, b, data, [0.0, 0.5, 0.5, 1.0], strategy=strategy)
    assert sizes.pop() == 3 and r.losses[1] == r.losses[2] and r.losses[0] != r.losses[1]
    s = simplex_barrier([a, copy.deepcopy(a), a], data, resolution=2, strategy=strategy)
    assert sizes.pop() == 1 and set(s.deviation) == {0.0}
    assert not sizes


def test_endpoints_and_nonnegative_barrier(pair):
    arch, a, b, data = pair
    r = barrier(a, b, data)
    for model, loss, acc in ((a, r.loss_a, r.acc_a), (b, r.loss_b, r.acc_b)):
        assert_same_metrics(loss, acc, model, data)
    assert r.losses[-1] == r.loss_a and r.losses[0] == r.loss_b
    assert r.loss_excess[0] == 0.0 and r.loss_excess[-1] == 0.0
    assert r.acc_excess[0] == 0.0 and r.acc_excess[-1] == 0.0
    assert r.loss_barrier >= 0.0 and r.acc_barrier >= 0.0
    back = BarrierResult.from_dict(json.loads(json.dumps(r.to_dict())))
    assert back.to_dict() == r.to_dict() and back.loss_barrier == r.loss_barrier


def test_vanilla_path_equals_interpolated_raw_model(pair):
    arch, a, b, data = pair
    r = barrier(a, b, data, [0.0, 0.3, 0.5, 1.0])
    assert r.space == "raw"
    for i, lam in ((1, 0.3), (2, 0.5)):
        mid = interpolate(a, b, lam)
        assert type(mid) is type(a)
        assert_same_metrics(r.losses[i], r.accuracies[i], mid, data)


def test_canonical_path_equals_interpolate_then_forward(pair):
    arch, a, b, data = pair
    ca, cb = canonicalize(a), canonicalize(b)
    r = barrier(ca, cb, data, [0.0, 0.25, 0.7, 1.0])
    assert r.space == "canonical"
    for i, lam in ((1, 0.25), (2, 0.7)):
        mid = interpolate(ca, cb, lam)
        assert isinstance(mid, CanonicalTransformer)
        assert_same_metrics(r.losses[i], r.accuracies[i], mid, data)
    assert not torch.allclose(interpolate(a, b, 0.5).state_dict()[next(iter(a.state_dict()))],
                              a.state_dict()[next(iter(a.state_dict()))])
    # mixing a raw and a canonical model canonicalises the raw one
    mixed = barrier(a, cb, data, [0.0, 0.25, 0.7, 1.0])
    assert mixed.space == "canonical" and max(abs(x - y) for x, y in zip(mixed.losses, r.losses, strict=True)) < 1e-9


def test_ensemble_equals_per_lambda_loop(pair):
    arch, a, b, data = pair
    for max_ensemble in (None, 4):
        r = barrier(a, b, data, 6, max_ensemble=max_ensemble, strategy="ensemble")
        for lam, loss, acc in zip(r.lambdas, r.losses, r.accuracies, strict=True):
            assert_same_metrics(loss, acc, interpolate(a, b, lam), data)


def test_auto_strategy_by_device_and_chunk_size():
    assert pick_strategy("auto", "cpu") == "loop"
    assert pick_strategy("auto", "cuda") == pick_strategy("auto", "cpu", max_ensemble=4) == "ensemble"
    assert pick_strategy("loop", "cuda") == "loop"
    with pytest.raises(ValueError, match="strategy 'batched' is not one of"):
        barrier(make("vit", 0), make("vit", 1), batches("vit", make("vit", 0)), strategy="batched")


@pytest.mark.parametrize("arch", ARCHS)
def test_loop_and_ensemble_give_the_same_numbers(arch):
    """float32 models, as the study runs them: every path, simplex and evaluation the same to 1e-6
    under both strategies (the raw loop runs the model's own forward, the ensemble the canonical
    one, so they agree to rounding, not bit for bit)."""
    a, b, c = (make(arch, seed, dtype=torch.float32) for seed in (0, 1, 2))
    data = batches(arch, a)

    def close(x: list[float], y: list[float]) -> bool:
        return max(abs(p - q) for p, q in zip(x, y, strict=True)) < 1e-6

    for models in ((a, b), (canonicalize(a), canonicalize(b))):
        loop, ensemble = (barrier(*models, data, 6, strategy=s) for s in ("loop", "ensemble"))
        assert close(loop.losses, ensemble.losses) and close(loop.loss_excess, ensemble.loss_excess)
        assert loop.space == ensemble.space
    for models in ((a, b, c), tuple(canonicalize(m) for m in (a, b, c))):
        loop, ensemble = (simplex_barrier(models, data, 3, strategy=s) for s in ("loop", "ensemble"))
        assert close(loop.losses, ensemble.losses) and close(loop.deviation, ensemble.deviation)
    loop, ensemble = (evaluate_ensemble([a, canonicalize(b)], data, strategy=s)[0] for s in ("loop", "ensemble"))
    assert close(loop, ensemble)
    loop, ensemble = (evaluate_ensemble([a, b], data, strategy=s)[0] for s in ("loop", "ensemble"))
    assert close(loop, ensemble)


def test_interpolate_raw_is_exact_at_ends_and_with_itself():
    a, b = make("gpt2", 0, tied=False), make("gpt2", 1, tied=False)
    sa, sb = a.state_dict(), b.state_dict()
    for lam, ref in ((1.0, sa), (0.0, sb)):
        out = interpolate(a, b, lam).state_dict()
        assert all(torch.equal(out[k], ref[k] if ref[k].is_floating_point() else sa[k]) for k in sa)
    for lam in (0.1, 0.5, 0.9):
        same = interpolate(a, a, lam).state_dict()
        assert all(torch.equal(same[k], sa[k]) for k in sa)
        mid = interpolate(a, b, lam).state_dict()
        k = "transformer.h.0.mlp.c_fc.weight"
        assert torch.allclose(mid[k], lam * sa[k] + (1 - lam) * sb[k], atol=1e-12)
    ca = canonicalize(a)
    assert all(torch.equal(interpolate(ca, canonicalize(b), 1.0).params()[k], v) for k, v in ca.params().items())


def test_lambdas_as_int_and_list(pair):
    arch, a, b, data = pair
    assert lambda_grid(5) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert lambda_grid(11)[3] == 0.3
    r_int = barrier(a, b, data, 5)
    r_list = barrier(a, b, data, [0, 0.25, 0.5, 0.75, 1])
    assert r_int.lambdas == r_list.lambdas and r_int.losses == r_list.losses


@pytest.mark.parametrize("bad", [[0.0, 0.5], [0.5, 1.0], [0.2, 0.8], [0.0, 1.0, 1.5], 1])
def test_bad_grid_raises(bad):
    with pytest.raises(ValueError, match="λ|lambdas"):
        lambda_grid(bad)


def test_data_as_pair_list_and_generator(pair):
    arch, a, b, data = pair
    x = torch.cat([d[0] for d in data])
    y = None if arch == "gpt2" else torch.cat([d[1] for d in data])
    one = barrier(a, b, (x, y), 5)
    many = barrier(a, b, data, 5)
    gen = barrier(a, b, (d for d in data), 5, progress=True)
    assert max(abs(p - q) for p, q in zip(one.losses, many.losses, strict=True)) < 1e-6
    # one batch of 2n items vs n batches: other shapes, other rounding; accuracy up to near-ties
    for lam, acc_one, acc_many in zip(many.lambdas, one.accuracies, many.accuracies, strict=True):
        assert abs(acc_one - acc_many) <= near_ties(interpolate(a, b, lam), data) + 1e-12
    assert gen.losses == many.losses  # the same batches in the same order: the same computation


def test_language_modelling_targets_none():
    a = make("gpt2", 0)
    data = batches("gpt2", a)
    losses, accs = evaluate_ensemble([a], data)
    ids = torch.cat([d[0] for d in data])
    logits = a(input_ids=ids).logits.double()
    ref = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)).item()
    assert abs(losses[0] - ref) < TOL and 0.0 <= accs[0] <= 1.0


@pytest.mark.parametrize("canonical", [False, True])
def test_simplex_corners_and_two_model_case(pair, canonical):
    arch, a, b, data = pair
    c = make(arch, 2)
    models = [canonicalize(m) for m in (a, b, c)] if canonical else [a, b, c]
    s = simplex_barrier(models, data, resolution=4)
    assert len(s.weights) == len(simplex_counts(3, 4)) == 15
    assert all(abs(sum(w) - 1) < 1e-12 for w in s.weights)
    for m, model in enumerate((a, b, c)):
        corner = s.weights.index([1.0 if j == m else 0.0 for j in range(3)])
        assert s.deviation[corner] == 0.0 and s.acc_deviation[corner] == 0.0
        assert abs(s.model_losses[m] - plain_metrics(model, data)[0]) < TOL
    assert s.loss_barrier >= 0.0
    assert SimplexResult.from_dict(json.loads(json.dumps(s.to_dict()))).to_dict() == s.to_dict()
    # M = 2 is the λ path: same grid (reversed: the first point is model A), same numbers
    two = simplex_barrier(models[:2], data, resolution=5)
    path = barrier(models[0], models[1], data, 6)
    assert [w[0] for w in two.weights] == path.lambdas[::-1]
    # the same points at other ensemble positions: equal up to batched rounding (fp64 models)
    assert max(abs(x - y) for x, y in zip(two.losses, path.losses[::-1], strict=True)) < 1e-9
    assert max(abs(x - y) for x, y in zip(two.deviation, path.loss_excess[::-1], strict=True)) < 1e-9


def test_simplex_of_identical_models_is_zero():
    a = make("vit", 4, dtype=torch.float32)
    s = simplex_barrier([a, a, a], batches("vit", a), resolution=3)
    assert set(s.deviation) == {0.0} and set(s.acc_deviation) == {0.0}
    assert s.loss_barrier == 0.0 and s.acc_barrier == 0.0


def test_evaluate_ensemble_matches_plain(pair):
    arch, a, b, data = pair
    losses, accs = evaluate_ensemble([a, canonicalize(b)], data)
    for model, loss, acc in zip((a, b), losses, accs, strict=True):
        assert_same_metrics(loss, acc, model, data)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("change", [{"depth": 3}, {"width": 32}])
def test_mismatched_architectures_raise(arch, change):
    a, b = make(arch, 0), make(arch, 1, **change)
    data = batches(arch, a)
    with pytest.raises(ValueError, match="state dicts differ"):
        barrier(a, b, data)
    with pytest.raises(ValueError, match="state dicts differ at|is in model"):
        interpolate(a, b, 0.5)
    what = next(iter(change))
    with pytest.raises(ValueError, match=f"different architectures.*{what}"):
        barrier(canonicalize(a), canonicalize(b), data)
    with pytest.raises(ValueError, match="different architectures"):
        simplex_barrier([canonicalize(a), a, canonicalize(b)], data, resolution=2)


def test_interpolate_rejects_different_models():
    with pytest.raises(ValueError, match="different classes"):
        interpolate(make("vit", 0), make("gpt2", 0), 0.5)
    a, b = make("gpt2", 0, tied=True), make("gpt2", 0, n_inner=40)
    with pytest.raises(ValueError, match=r"transformer\.h\.0\.mlp\.c_fc\.weight.*\(24, 96\) vs \(24, 40\)"):
        interpolate(a, b, 0.5)


# -- attention on exact low-rank factors of the circuits ------------------------------------------

@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_factored_attention_is_the_dense_attention(arch: str, dtype: torch.dtype) -> None:
    """Width 32 with 4 heads: head_dim 8, so a pair mixes to rank 16 < 0.6 · 33 and is factored."""
    a, b = (make(arch, seed, dtype, width=32, heads=4) for seed in (0, 1))
    inputs = batches(arch, a, 1)[0][0]
    chains = [[lam] for lam in lambda_grid(5)]
    tol = 1e-9 if dtype == torch.float64 else 2e-5
    for models, rank in (((a, b), 8), ((canonicalize(a), canonicalize(b)), 16)):  # raw space, canonical space
        config, params, space = _ensemble_params(models, chains)
        assert all(k in params for k in FACTOR_KEYS) and params["qk_left"].shape[-1] == rank, space
        for name in ("qk", "ov"):  # L Rᵀ is the circuit
            rebuilt = params[f"{name}_left"] @ params[f"{name}_right"].transpose(-1, -2)
            assert (rebuilt - params[name]).abs().max() <= tol * params[name].abs().max()
        dense = {k: v for k, v in params.items() if k not in FACTOR_KEYS}
        with torch.no_grad():
            want, got = canonical_forward(dense, config, inputs), canonical_forward(params, config, inputs)
        assert (got - want).abs().max() <= tol * want.abs().max()
    # and the whole path agrees with plain forwards of the interpolated raw models
    r = barrier(a, b, batches(arch, a), lambdas=3)
    for lam, loss in zip(r.lambdas, r.losses, strict=True):
        assert abs(loss - plain_metrics(interpolate(a, b, lam), batches(arch, a))[0]) < (TOL if dtype == torch.float64 else 1e-4)


def test_factors_only_where_they_are_exact_and_pay() -> None:
    a, b = (canonicalize(make("gpt2", seed, width=32, heads=4)) for seed in (0, 1))
    stacked = {k: torch.stack([a.params()[k].detach(), b.params()[k].detach()]) for k in a.params()}
    assert factor_circuits(stacked, 8) is not None
    assert factor_circuits(stacked, 7) is None  # rank 8 circuits do not fit rank 7
    assert factor_circuits(stacked, 20) is None  # 20 ≥ 0.6 · 33: no gain
    dense = {k: v.detach().clone() for k, v in stacked.items()}
    dense["qk"] = torch.randn_like(dense["qk"])  # full-rank circuits
    assert factor_circuits(dense, 8) is None
    # a model mixed with itself stays dense, so it is exactly itself along the path
    _, params, _ = _ensemble_params([a, a], [[0.3], [0.5]])
    assert not any(k in params for k in FACTOR_KEYS)
    # twice the heads by copying (a semi-permutation): head_dim 4 is below the circuits' rank 8
    wide = SemiPermutation.random(a.config, num_heads=8, generator=torch.Generator().manual_seed(0)).apply(a)
    _, params, _ = _ensemble_params([wide, wide.with_params(
        {k: v.detach() * 1.01 for k, v in wide.params().items()})], [[0.5]])
    assert not any(k in params for k in FACTOR_KEYS)


def test_factoring_in_slices_gives_the_same_factors(monkeypatch: pytest.MonkeyPatch) -> None:
    import lmc_core.canonical as canonical

    a, b = (canonicalize(make("vit", seed, width=32, heads=4)) for seed in (0, 1))
    stacked = {k: torch.stack([a.params()[k].detach(), b.params()[k].detach()]) for k in a.params()}
    whole = factor_circuits(stacked, 8)
    monkeypatch.setattr(canonical, "FACTOR_SLICE_BYTES", 3 * 8 * 33 * 33)  # three circuits a slice
    sliced = factor_circuits(stacked, 8)
    assert whole.keys() == sliced.keys() == set(FACTOR_KEYS)
    for key in FACTOR_KEYS:
        assert whole[key].shape == sliced[key].shape
        assert torch.allclose(whole[key], sliced[key], rtol=0, atol=1e-12)


def test_factored_simplex_of_three_models_is_the_dense_one() -> None:
    """Three models, head_dim 6: the mix has rank 18 < 0.6 · 49, built from each model's factors
    with the stick-breaking weights written out."""
    models = [canonicalize(make("gpt2", seed, width=48, heads=8)) for seed in (0, 1, 2)]
    chains = [[1 / 3, 0.5], [0.0, 0.25], [1.0, 0.0], [0.2, 1.0]]
    config, params, _ = _ensemble_params(models, chains)
    assert params["qk_left"].shape[-1] == 18
    for name in ("qk", "ov"):
        rebuilt = params[f"{name}_left"] @ params[f"{name}_right"].transpose(-1, -2)
        assert (rebuilt - params[name]).abs().max() <= 1e-9 * params[name].abs().max()
    inputs = batches("gpt2", make("gpt2", 0, width=48, heads=8), 1)[0][0]
    dense = {k: v for k, v in params.items() if k not in FACTOR_KEYS}
    with torch.no_grad():
        want, got = canonical_forward(dense, config, inputs), canonical_forward(params, config, inputs)
    assert (got - want).abs().max() <= 1e-9 * want.abs().max()


def test_the_loop_factors_circuits_only_when_that_pays(monkeypatch: pytest.MonkeyPatch) -> None:
    """The break-even of `_factors_pay` sits between one image and a realistic test set for the
    paper-size ViT (d 256, 8 heads, 6 layers), and a run either way gives the same numbers."""
    vit = canonicalize(make_vit(dtype=torch.float32, seed=0, width=256, depth=6, heads=8, img_size=28, in_chans=1))
    config = vit.config
    one = [(torch.zeros(1, 1, 28, 28), None)]
    many = [(torch.zeros(64, 1, 28, 28), None)] * 10
    assert not barrier_module._factors_pay(config, 2, one, 3)
    assert barrier_module._factors_pay(config, 2, many, 11)
    raw = [make("vit", seed, dtype=torch.float32, heads=4) for seed in (0, 1)]  # mixed rank 12 of 25
    a, b = (canonicalize(m) for m in raw)
    data = batches("vit", raw[0])
    calls = []
    monkeypatch.setattr(barrier_module, "_mixed_factors", lambda *args, real=barrier_module._mixed_factors:
                        calls.append(1) or real(*args))
    dense = barrier(a, b, data, 5, strategy="loop")
    assert not calls
    monkeypatch.setattr(barrier_module, "_factors_pay", lambda *args: True)
    _, params, _ = barrier_module._ensemble_params([a, b], [[0.5]])
    assert all(key in params for key in FACTOR_KEYS)  # the factors exist, so the run below uses them
    calls.clear()
    factored = barrier(a, b, data, 5, strategy="loop")
    assert calls
    assert max(abs(x - y) for x, y in zip(dense.losses, factored.losses, strict=True)) < 1e-6


def test_raw_models_in_train_mode_with_dropout_are_evaluated_as_in_eval_mode() -> None:
    """The loop runs the raw model's own forward: it must do so in eval mode (no dropout), as the
    ensemble (canonical form, which has none) does, and leave the caller's models as they were."""
    a, b = (make("gpt2", seed, dtype=torch.float32) for seed in (0, 1))
    for model in (a, b):
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.5
        model.train()
    data = batches("gpt2", a)
    loop, ensemble = (barrier(a, b, data, 5, strategy=s) for s in ("loop", "ensemble"))
    assert max(abs(x - y) for x, y in zip(loop.losses, ensemble.losses, strict=True)) < 1e-6
    assert a.training and b.training
