"""The multi-task trade-off (lmc_study.multitask): the hypervolume of known fronts, the distance
behind a front, Δm, EXTRA's objective and order term, the order score, the path measures and
their paired comparisons and verdicts, the two heads' losses and metrics, one scalarised model
trained and cached, and one whole seed of the study on a few Fashion-MNIST images."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import make_vit, single_thread, vit_images  # noqa: F401  (autouse fixture)

from lmc_core.adapters import canonicalize
from lmc_core.cache import CheckpointCache
from lmc_study.multitask import (
    COARSE_GROUPS,
    COARSE_OF_FINE,
    MULTITASK_VERSION,
    NUM_COARSE,
    NUM_FINE,
    REFERENCE,
    SETS,
    behind_front,
    delta_m,
    dominated_fraction,
    extra_objective,
    hypervolume,
    order_score,
    order_term,
    path_comparisons,
    path_summary,
    path_table,
    scalarised_spec,
    stretches,
    sweep_objective,
    task_losses,
    task_metrics,
    tight_reference,
    tradeoff,
    tradeoff_verdicts,
    train_scalarised,
    worse_stretches,
)
from lmc_study.profiles import get_profile

TWO_HEADS = dict(depth=1, width=8, heads=2, img_size=8, patch_size=4, num_classes=NUM_FINE + NUM_COARSE)


# -- hypervolume ---------------------------------------------------------------------------------

def test_hypervolume_of_known_fronts():
    ref = (3.0, 3.0)
    assert hypervolume([(1.0, 1.0)], ref) == 4.0
    assert hypervolume([(1.0, 2.0), (2.0, 1.0)], ref) == 3.0  # 2 + 2 − the shared unit square
    assert hypervolume([(2.0, 1.0), (1.0, 2.0), (2.5, 2.5)], ref) == 3.0  # order-free; dominated point adds 0
    assert hypervolume([(0.0, 2.0), (1.0, 1.0), (2.0, 0.0)], ref) == 3.0 + 2.0 + 1.0
    assert hypervolume([(4.0, 0.0), (0.0, 3.0)], ref) == 0.0  # outside the reference box
    assert hypervolume([], ref) == 0.0
    assert hypervolume([(0.0, 0.0)]) == pytest.approx(math.log(10) * math.log(4))  # default: chance losses
    assert REFERENCE == (math.log(10), math.log(4))


def test_hypervolume_matches_a_grid_count():
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 1, size=(7, 2))
    grid = (np.arange(800) + 0.5) / 800
    x, y = np.meshgrid(grid, grid, indexing="ij")
    covered = np.zeros_like(x, dtype=bool)
    for f1, f2 in points:
        covered |= (x >= f1) & (y >= f2)
    assert hypervolume(points.tolist(), (1.0, 1.0)) == pytest.approx(covered.mean(), abs=5e-3)


def test_dominated_fraction():
    front = [(1.0, 3.0), (2.0, 2.0), (3.0, 1.0)]
    assert dominated_fraction([(2.5, 2.5), (1.5, 3.5), (0.5, 0.5), (2.0, 2.0)], front) == 0.5
    assert dominated_fraction(front, front) == 0.0  # a point does not dominate itself


def test_behind_front_tight_reference_and_delta_m():
    front = [(1.0, 3.0), (2.0, 2.0), (3.0, 1.0)]
    assert behind_front((2.5, 2.5), front) == pytest.approx(0.5)  # (2, 2) beats it by 0.5 in both
    assert behind_front((2.2, 3.5), front) == pytest.approx(0.5)  # (1, 3): by 1.2 and 0.5
    assert behind_front((0.5, 0.5), front) == 0.0 and behind_front((2.0, 2.0), front) == 0.0
    assert behind_front((1.5, 1.5), front) == 0.0  # between front points, beaten by none in both
    assert tight_reference(front) == pytest.approx((3.1, 3.1))
    assert hypervolume([(2.5, 2.5)], tight_reference(front)) == pytest.approx(0.36)
    assert delta_m((0.9, 0.95), (0.9, 0.95)) == 0.0
    assert delta_m((0.99, 0.95), (0.9, 0.95)) == pytest.approx(5.0)  # +10% on one task, 0 on the other
    with pytest.raises(ValueError, match="2 accuracies against 1"):
        delta_m((0.9, 0.9), (0.9,))
    with pytest.raises(ValueError, match="empty front"):
        behind_front((1.0, 1.0), [])


def test_stretches():
    ts = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    assert stretches(ts, [False, True, True, False, True, True]) == [(0.1, 0.2), (0.4, 0.5)]
    assert stretches(ts, [False] * 6) == [] and stretches(ts, [True] * 6) == [(0.0, 0.5)]


def _path(name, seed, bump=0.0, at=0.3):
    """A made-up path: fine loss falls 1.0 → 0.6 along t and coarse rises 0.2 → 0.3, plus a
    bump of `bump` nats on the fine loss at t = `at` (and its neighbours, half as much)."""
    ts = [i / 10 for i in range(11)]
    rows = []
    for t in ts:
        extra = bump if abs(t - at) < 1e-9 else bump / 2 if abs(t - at) < 0.11 else 0.0
        rows.append({"set": name, "seed": seed, "position": t, "loss_fine": 1.0 - 0.4 * t + extra,
                     "loss_coarse": 0.2 + 0.1 * t, "acc_fine": 0.8 + 0.05 * t, "acc_coarse": 0.97 - 0.01 * t})
    return rows


def test_path_summary_measures_and_worse_stretches_see_a_bump():
    """A bad stretch must show: the max loss, the distance behind the front and the tight
    hypervolume see a bump that the chance-reference hypervolume cannot."""
    front = [(1.0 - 0.4 * t, 0.2 + 0.1 * t) for t in (0.0, 1 / 3, 2 / 3, 1.0)]
    single = (0.85, 0.97)
    flat, bumped = _path("line", 0), _path("extra", 0, bump=0.3)
    s_flat = path_summary("line", [p["position"] for p in flat], flat, front, single)
    s_bump = path_summary("extra", [p["position"] for p in bumped], bumped, front, single)
    assert s_flat["max_fine"] == pytest.approx(1.0) and s_bump["max_fine"] == pytest.approx(0.88 + 0.3)
    assert s_flat["mean_fine"] == pytest.approx(0.8) and s_bump["mean_fine"] == pytest.approx(0.8 + 0.6 / 11)
    assert s_flat["behind_mean"] == 0.0 and s_flat["dominated"] == 0.0
    assert s_bump["behind_max"] == pytest.approx(0.03) and s_bump["dominated"] == pytest.approx(3 / 11)
    drop = {key: 1 - s_bump[key] / s_flat[key] for key in ("hypervolume", "hypervolume_tight")}
    assert drop["hypervolume_tight"] > 5 * drop["hypervolume"] > 0  # the tight reference sees it far better
    assert s_bump["hypervolume_share"] == pytest.approx(s_bump["hypervolume_tight"] / hypervolume(front, tight_reference(front)))
    assert s_flat["delta_m_best"] == pytest.approx(delta_m((0.85, 0.96), single))
    assert s_flat["min_acc_fine"] == pytest.approx(0.8) and s_flat["min_acc_coarse"] == pytest.approx(0.96)
    points = _path("line", 0) + _path("line", 1) + _path("extra", 0, bump=0.3) + _path("extra", 1, bump=0.2)
    (bad,) = worse_stretches(points, "extra")
    assert (bad["task"], bad["from"], bad["to"], bad["worst_t"]) == ("fine", 0.2, 0.4, 0.3)
    assert bad["worst"] == pytest.approx(0.25) and bad["seeds_over"] == 2 == bad["seeds"]
    assert worse_stretches(points, "line") == []


def test_path_table_comparisons_and_verdicts():
    front = [(1.0 - 0.4 * t, 0.2 + 0.1 * t) for t in (0.0, 1 / 3, 2 / 3, 1.0)]
    single = (0.85, 0.97)
    points, summaries = [], []
    for seed, bump in enumerate((0.3, 0.25, 0.35)):
        for name, b in (("line", 0.0), ("extra", bump), ("sweep", 0.001 * seed)):
            rows = _path(name, seed, bump=b)
            points += rows
            summaries.append({**path_summary(name, [p["position"] for p in rows], rows, front, single), "seed": seed,
                              "wall_s": 0.0 if name == "line" else 20.0, "steps": 0 if name == "line" else 300,
                              "forward_points": 0 if name == "line" else 600, "models": 0, "skipped": 0,
                              "nurbs_weights": [1.0, 2.0, 1.0] if name == "extra" else None})
        points += [{"set": "front", "seed": seed, "position": w, "loss_fine": f, "loss_coarse": c}
                   for w, (f, c) in zip((0.95, 0.65, 0.35, 0.05), front, strict=True)]
        summaries.append({**path_summary("front", [0, 1, 2, 3], [{"loss_fine": f, "loss_coarse": c, "acc_fine": 0.8,
                                                                  "acc_coarse": 0.9} for f, c in front], front, single),
                          "seed": seed, "wall_s": 120.0, "steps": 5000, "forward_points": 5000, "models": 2})
    table = {r["set"]: r for r in path_table(summaries)}
    assert [s for s in SETS if s in table] == ["front", "line", "extra", "sweep"]
    assert table["extra"]["max_fine_mean"] == pytest.approx(0.88 + 0.3) and table["extra"]["n"] == 3
    assert table["extra"]["behind_max_mean"] == pytest.approx(0.03) and table["line"]["behind_max_se"] == 0.0
    comparisons = {(d["set"], d["measure"]): d for d in path_comparisons(summaries)}
    d = comparisons["extra", "max_fine"]
    assert d["n"] == 3 and d["mean_diff"] == pytest.approx(0.18) and d["verdict"] == "higher"
    assert comparisons["sweep", "max_fine"]["verdict"] == "no difference"
    verdicts = tradeoff_verdicts(summaries, points)
    assert verdicts[0].startswith("Across the scalarised models (3 seed(s)) the fine-task test loss spans 0.600–1.000")
    extra = next(v for v in verdicts if v.startswith("NURBS, EXTRA's objective is worse"))
    assert "fine loss over t ∈ [0.20, 0.40], worst at t = 0.30 (+0.300 nats, 3 of 3 seeds)" in extra and "higher" in extra
    sweep = next(v for v in verdicts if v.startswith("NURBS, weights swept along t (ours) is nowhere worse"))
    assert "no difference" in sweep
    assert any("skipped 0 step(s)" in v for v in verdicts)
    assert any(v.startswith("Closest to the front") and "The closest is the straight line" in v for v in verdicts)


# -- ordering ------------------------------------------------------------------------------------

def test_order_term_is_extra_with_the_tasks_swapped():
    fine, coarse, ts = torch.tensor([2.0, 1.0]), torch.tensor([0.5, 0.9]), torch.tensor([0.2, 0.7])
    expected = 0.5 * (math.exp((1.0 - 2.0) * 0.5) + math.exp((0.5 - 0.9) * 0.5))
    assert order_term(fine, coarse, ts).item() == pytest.approx(expected, rel=1e-6)
    assert order_term(fine.flip(0), coarse.flip(0), ts.flip(0)).item() == pytest.approx(expected, rel=1e-6)
    assert order_term(fine, coarse, ts).item() < 1.0 < order_term(fine.flip(0), coarse.flip(0), ts).item()
    three = order_term(torch.tensor([3.0, 2.0, 1.0]), torch.tensor([0.0, 1.0, 2.0]), torch.tensor([0.0, 0.5, 1.0]))
    pairs = [math.exp(-0.5), math.exp(-0.5), math.exp(-0.5), math.exp(-0.5), math.exp(-2.0), math.exp(-2.0)]
    assert three.item() == pytest.approx(0.5 * sum(pairs) / 3, rel=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        order_term(fine[:1], coarse[:1], ts[:1])


def test_order_score():
    assert order_score([0, 0.5, 1], [3, 2, 1], [1, 2, 3]) == 1.0
    assert order_score([1, 0.5, 0], [3, 2, 1], [1, 2, 3]) == 0.0
    assert order_score([0, 0.5, 1], [3, 2, 1], [2, 2, 2]) == 0.5  # fine ordered, coarse flat
    assert order_score([0, 1, 2, 3], [1, 3, 0, 2], [0, 1, 2, 3]) == pytest.approx((3 / 6 + 1) / 2)
    with pytest.raises(ValueError, match="two distinct positions"):
        order_score([0.5, 0.5], [1, 2], [1, 2])


# -- the two heads -------------------------------------------------------------------------------

def test_coarse_groups_partition_the_classes():
    members = sorted(c for group in COARSE_GROUPS.values() for c in group)
    assert members == list(range(NUM_FINE)) and NUM_COARSE == 4
    assert COARSE_OF_FINE == (0, 1, 0, 1, 0, 2, 0, 2, 3, 2)


def test_task_losses_per_member():
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(3, 5, 14, generator=g), torch.randint(0, 10, (5,), generator=g)
    fine, coarse = task_losses(logits, labels)
    assert fine.shape == coarse.shape == (3,)
    groups = torch.tensor(COARSE_OF_FINE)[labels]
    for e in range(3):
        assert fine[e].item() == pytest.approx(F.cross_entropy(logits[e, :, :10], labels).item(), rel=1e-6)
        assert coarse[e].item() == pytest.approx(F.cross_entropy(logits[e, :, 10:], groups).item(), rel=1e-6)
    with pytest.raises(ValueError, match="10 \\+ 4 outputs"):
        task_losses(logits[..., :10], labels)
    with pytest.raises(ValueError, match="needs labelled \\(image\\) batches"):
        task_losses(logits, None)


def test_sweep_and_extra_objectives():
    g = torch.Generator().manual_seed(1)
    logits, labels = torch.randn(2, 6, 14, generator=g), torch.randint(0, 10, (6,), generator=g)
    fine, coarse = task_losses(logits, labels)
    ts = torch.tensor([0.0, 1.0], dtype=torch.float64)
    plain = sweep_objective(0.1, 0.9)(logits, None, labels, ts)
    expected = ((0.1 * fine[0] + 0.9 * coarse[0]) + (0.9 * fine[1] + 0.1 * coarse[1])) / 2
    assert plain.item() == pytest.approx(expected.item(), rel=1e-6)
    ordered = sweep_objective(0.1, 0.9, order_weight=2.0)(logits, None, labels, ts)
    assert ordered.item() == pytest.approx((expected + 2.0 * order_term(fine, coarse, ts)).item(), rel=1e-6)
    # EXTRA (CityScapes trainer, lines 166-170): fixed weights, the bump p on the order term only
    ts = torch.tensor([0.2, 0.9], dtype=torch.float64)
    extra = extra_objective(0.5, 2.0)(logits, None, labels, ts)
    bump = (math.exp(-0.3) + math.exp(-0.4)) / 2
    by_hand = ((0.5 * fine + 2.0 * coarse).mean() + bump * order_term(fine, coarse, ts)).item()
    assert extra.item() == pytest.approx(by_hand, rel=1e-6)


def test_task_metrics_match_each_model_alone():
    models = [make_vit(seed=s, **TWO_HEADS) for s in (1, 2)]
    g = torch.Generator().manual_seed(2)
    data = [(vit_images(models[0], batch=5, seed=i), torch.randint(0, 10, (5,), generator=g)) for i in range(2)]
    metrics = task_metrics([models[0], canonicalize(models[1])], data)
    assert len(metrics) == 2 and set(metrics[0]) == {"loss_fine", "loss_coarse", "acc_fine", "acc_coarse"}
    for model, m in zip(models, metrics, strict=True):
        with torch.no_grad():
            logits = torch.cat([model(x) for x, _ in data])[None]
        labels = torch.cat([y for _, y in data])
        fine, coarse = task_losses(logits, labels)
        assert m["loss_fine"] == pytest.approx(fine.item(), abs=1e-5)
        assert m["loss_coarse"] == pytest.approx(coarse.item(), abs=1e-5)
        assert m["acc_fine"] == (logits[0, :, :10].argmax(-1) == labels).double().mean().item()


def test_train_scalarised_trains_two_heads_and_caches(tmp_path):
    profile = get_profile("smoke", {"vit.train_subset": 96, "vit.epochs": 1, "vit.batch_size": 16,
                                    "vit.embed_dim": 16, "vit.num_heads": 2, "vit.mlp_dim": 32, "vit.depth": 1})
    cache = CheckpointCache(tmp_path)
    assert scalarised_spec(profile, 0.7, 0)["version"] == MULTITASK_VERSION
    rng = torch.get_rng_state()
    model = train_scalarised(profile, 0.7, seed=0, device=torch.device("cpu"), cache=cache)
    assert torch.equal(torch.get_rng_state(), rng)  # training on a cache miss leaves the global RNG alone
    assert model.head.out_features == NUM_FINE + NUM_COARSE and model.lmc_meta["steps"] == 6
    again = train_scalarised(profile, 0.7, seed=0, device=torch.device("cpu"), cache=cache)
    assert again.lmc_meta["from_cache"] and not model.lmc_meta["from_cache"]
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="must lie in \\[0, 1\\]"):
        train_scalarised(profile, 1.5, seed=0, device=torch.device("cpu"))


def test_one_seed_of_the_study_end_to_end(tmp_path, monkeypatch):
    """Every set measured at every t, the summaries complete, EXTRA's start used, the guard
    counted, the single-task models present: on a tiny profile in seconds."""
    monkeypatch.setenv("LMC_CACHE_DIR", str(tmp_path))
    profile = get_profile("smoke", {"vit.train_subset": 96, "vit.epochs": 1, "vit.batch_size": 16,
                                    "vit.embed_dim": 16, "vit.num_heads": 2, "vit.mlp_dim": 32, "vit.depth": 1,
                                    "eval.test_images": 64, "align.lm_batch_size": 16, "curves.mt_steps": 3,
                                    "curves.mt_points": 5, "curves.mt_test_images": 40,
                                    "curves.task_weights": [0.9, 0.5, 0.1]})
    points, summaries = tradeoff(profile, torch.device("cpu"), seed=0)
    assert [s["set"] for s in summaries] == list(SETS)
    for name in SETS[1:]:
        mine = sorted(p["position"] for p in points if p["set"] == name)
        assert mine == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0]), name
    by = {s["set"]: s for s in summaries}
    assert by["extra_init"]["nurbs_weights"] != [1.0] * 5 and by["extra_bspline"]["nurbs_weights"] == [1.0] * 5
    assert by["extra_init"]["bend_offsets"][0] > 0.5  # started at fresh models, far off the line
    assert all(by[s]["skipped"] == 0 for s in ("extra", "extra_init", "extra_bspline"))
    assert {p["set"] for p in points} >= {"single_fine", "single_coarse"}
    line = [p for p in points if p["set"] == "line"]
    front = sorted((p for p in points if p["set"] == "front"), key=lambda p: -p["position"])
    for end, model in ((1.0, front[0]), (0.0, front[-1])):  # the line's ends are the front's end models
        (p,) = [p for p in line if p["position"] == end]
        assert p["loss_fine"] == pytest.approx(model["loss_fine"], abs=1e-5)
