"""The multi-task trade-off (lmc_study.multitask): the hypervolume of known fronts, EXTRA's order
term, the order score, the two heads' losses and metrics, and one scalarised model trained and
cached on a few Fashion-MNIST images."""

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
    compare_with_front,
    dominated_fraction,
    hypervolume,
    order_score,
    order_term,
    scalarised_spec,
    task_losses,
    task_metrics,
    tradeoff_objective,
    tradeoff_verdicts,
    train_scalarised,
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


def test_compare_with_front_and_verdicts():
    def summary(name, seed, hv, wall, steps, models):
        return {"set": name, "seed": seed, "hypervolume": hv, "order_score": 0.75, "dominated": 0.5, "wall_s": wall,
                "steps": steps, "forward_points": 2 * steps if name != "front" else steps, "models": models}
    summaries = [summary("front", 0, 2.0, 30.0, 600, 2), summary("line", 0, 1.0, 0.0, 0, 0),
                 summary("bezier", 0, 1.5, 10.0, 100, 0), summary("front", 1, 2.2, 32.0, 600, 2),
                 summary("line", 1, 1.2, 0.0, 0, 0), summary("bezier", 1, 2.0, 12.0, 100, 0)]
    rows = {r["set"]: r for r in compare_with_front(summaries)}
    assert list(rows) == ["front", "line", "bezier"]
    assert rows["bezier"]["hypervolume_mean"] == pytest.approx(1.75)
    assert rows["bezier"]["hv_minus_front_mean"] == pytest.approx(-0.35) and rows["bezier"]["hv_lower_than_front"] == 2
    assert rows["bezier"]["gap_closed_mean"] == pytest.approx((0.5 + 0.8) / 2)
    assert rows["line"]["gap_closed_mean"] == 0.0 and rows["front"]["gap_closed_mean"] == 1.0
    points = [{"set": "front", "loss_fine": f, "loss_coarse": c} for f, c in ((0.6, 0.2), (1.0, 0.18))]
    spread, line, bezier = tradeoff_verdicts(list(rows.values()), points)
    assert spread.startswith("Across the scalarised models the fine-task test loss spans 0.600–1.000 and the "
                             "coarse-task loss 0.180–0.200") and "20.0× as much" in spread
    assert "at no training cost beyond the endpoints" in line and "recovers" not in line
    assert "0.3500 ± 0.1500 below the front's, lower on 2 of 2 seed(s); it recovers 65%" in bezier
    assert "11.0 s of curve training (100 steps of 2 points) against 31.0 s" in bezier


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


def test_tradeoff_objective_weights_the_tasks_along_t():
    g = torch.Generator().manual_seed(1)
    logits, labels = torch.randn(2, 6, 14, generator=g), torch.randint(0, 10, (6,), generator=g)
    fine, coarse = task_losses(logits, labels)
    ts = torch.tensor([0.0, 1.0], dtype=torch.float64)
    plain = tradeoff_objective(0.1, 0.9)(logits, None, labels, ts)
    expected = ((0.1 * fine[0] + 0.9 * coarse[0]) + (0.9 * fine[1] + 0.1 * coarse[1])) / 2
    assert plain.item() == pytest.approx(expected.item(), rel=1e-6)
    ordered = tradeoff_objective(0.1, 0.9, order_weight=2.0)(logits, None, labels, ts)
    assert ordered.item() == pytest.approx((expected + 2.0 * order_term(fine, coarse, ts)).item(), rel=1e-6)


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
