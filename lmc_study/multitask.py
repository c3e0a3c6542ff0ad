"""EXTRA's question on our data: do trained curves between two multi-task models trace the
trade-off between the tasks, and at what price compared with linear scalarisation?

Two tasks on Fashion-MNIST images:

1. fine: the 10 classes;
2. coarse: 4 departments of a clothes shop, COARSE_GROUPS: tops (T-shirt/top, pullover,
   coat, shirt), trousers and dresses, footwear (sandal, sneaker, ankle boot), bags.

Why this grouping: it is a real second labelling (how a shop shelves the items), decided by
the silhouette alone, while most of the fine task's errors are confusions *inside* the tops
group (shirt vs T-shirt vs pullover vs coat), which the coarse task lumps together. A trunk
tuned for the coarse task need not learn the features the fine task needs most. It is a
function of the fine label, so the conflict between the tasks is one of capacity and
emphasis, not of contradictory targets: the front can be narrow, and the chapter measures how
wide it is rather than assuming it.

The model is the book's ViT with a shared trunk and two linear heads: one timm ViT with
10 + 4 outputs, logits[..., :10] the fine head and logits[..., 10:] the coarse head. Its
canonical form is an ordinary `CanonicalTransformer` (num_outputs 14), so interpolation,
curves and the ensemble forward apply unchanged.

- Linear scalarisation (the front): one model per weighting w of the loss w L_fine +
  (1 − w) L_coarse, all from the same initialisation seed and data order, trained with the
  profile's ViT recipe. The first and last weightings are the curves' endpoints A (t = 1) and
  B (t = 0): every set of models below shares those two.
- Curves between B and A (`lmc_core.curves`), trained on the t-dependent scalarisation
  w(t) = lerp(w_B, w_A, t) (EXTRA weights its base loss by t too, with another w(t)): Bézier,
  NURBS, and NURBS plus EXTRA's order-aware term (`order_term`) that rewards the fine loss
  falling and the coarse loss rising along t. Two points t_1, t_2 ~ U(0, 1) per step for all
  three, as EXTRA, so they cost the same.
- The straight (canonical) line between the endpoints: the free baseline.

Measured on the test subset: the task-loss pair of every model or curve point, the 2-D
hypervolume of each set against the reference point REFERENCE = (ln 10, ln 4) (the losses of
the uniform predictor of each task: a point no better than chance on a task adds nothing), the
order score along t, and the training cost (steps, wall time).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmc_core.adapters import canonicalize
from lmc_core.cache import CheckpointCache
from lmc_core.canonical import canonical_forward
from lmc_core.curves import Objective, curve_points, fit_curve
from lmc_core.interpolation import lambda_grid
from lmc_core.metrics import autocast_context, model_logits
from lmc_core.schedules import make_scheduler

from .data import image_batches
from .data.splits import image_splits
from .models import build_model
from .profiles import Profile
from .train import TRAINER_VERSION, epoch_seed, param_groups

FINE_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                "Ankle boot")
COARSE_GROUPS = {"tops": (0, 2, 4, 6), "trousers and dresses": (1, 3), "footwear": (5, 7, 9), "bags": (8,)}
COARSE_OF_FINE = tuple(next(g for g, members in enumerate(COARSE_GROUPS.values()) if c in members)
                       for c in range(len(FINE_CLASSES)))
NUM_FINE, NUM_COARSE = len(FINE_CLASSES), len(COARSE_GROUPS)
REFERENCE = (math.log(NUM_FINE), math.log(NUM_COARSE))
TASKS = ("fine", "coarse")
SETS = ("front", "line", "bezier", "nurbs", "nurbs_order")
MULTITASK_VERSION = 1  # bump when a change to train_scalarised changes the weights it gives (cache key)
SET_LABELS = {"front": "linear scalarisation (one model per weighting)", "line": "straight line (canonical)",
              "bezier": "Bézier curve", "nurbs": "NURBS curve", "nurbs_order": "NURBS + order-aware term"}


# -- the two tasks -------------------------------------------------------------------------------

def task_losses(logits: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy of the fine and the coarse head of each ensemble member: logits
    (E, B, 14), labels (B,) fine classes -> two (E,) tensors (fp32)."""
    if labels is None:
        raise ValueError("the multi-task objective needs labelled (image) batches: got targets None "
                         "(token blocks); pass batches of (images, fine labels)")
    E, B, K = logits.shape
    if K != NUM_FINE + NUM_COARSE:
        raise ValueError(f"a two-head model has {NUM_FINE} + {NUM_COARSE} outputs, got {K}")
    coarse = torch.tensor(COARSE_OF_FINE, device=labels.device)[labels]
    logits = logits.float().flatten(0, 1)

    def ce(part: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(part, target.repeat(E), reduction="none").view(E, B).mean(1)
    return ce(logits[:, :NUM_FINE], labels), ce(logits[:, NUM_FINE:], coarse)


def order_term(fine: Tensor, coarse: Tensor, ts: Tensor) -> Tensor:
    """EXTRA's order-aware term, averaged over the pairs i < j of the E points:
    ½ [exp((L_f(t_j) − L_f(t_i))(t_j − t_i)) + exp((L_c(t_i) − L_c(t_j))(t_j − t_i))]. Each
    exponent is negative when the fine loss falls and the coarse loss rises from t_i to t_j
    (towards A at t = 1, the fine-weighted end): EXTRA's term with the tasks' roles swapped."""
    if len(ts) < 2:
        raise ValueError("the order term compares points: it needs at least 2 values of t")
    i, j = torch.triu_indices(len(ts), len(ts), 1, device=fine.device)
    dt = (ts[j] - ts[i]).to(fine.dtype)
    return 0.5 * (torch.exp((fine[j] - fine[i]) * dt) + torch.exp((coarse[i] - coarse[j]) * dt)).mean()


def tradeoff_objective(weight_b: float, weight_a: float, order_weight: float = 0.0) -> Objective:
    """A curve objective for `fit_curve`: at each point the scalarisation w(t) L_fine +
    (1 − w(t)) L_coarse with w(t) = lerp(weight_b, weight_a, t), averaged over the points,
    plus `order_weight` · `order_term`."""
    def objective(logits: Tensor, inputs: Tensor, targets: Tensor | None, ts: Tensor) -> Tensor:
        fine, coarse = task_losses(logits, targets)
        w = torch.lerp(torch.full_like(fine, weight_b), torch.full_like(fine, weight_a), ts.to(fine.dtype))
        loss = (w * fine + (1 - w) * coarse).mean()
        return loss + order_weight * order_term(fine, coarse, ts) if order_weight else loss
    return objective


# -- the front: one model per weighting ----------------------------------------------------------

def scalarised_spec(profile: Profile, weight: float, seed: int) -> dict[str, Any]:
    """What decides a scalarised two-head model's weights (its checkpoint-cache key)."""
    return {"kind": "vit_two_heads", "recipe": dataclasses.asdict(profile.vit), "task_weight": float(weight),
            "coarse_of_fine": list(COARSE_OF_FINE), "seed": int(seed), "trainer_version": TRAINER_VERSION,
            "version": MULTITASK_VERSION}


def train_scalarised(profile: Profile, weight: float, seed: int, device: torch.device, *,
                     cache: CheckpointCache | None = None) -> nn.Module:
    """A two-head ViT trained on weight · L_fine + (1 − weight) · L_coarse with the profile's
    ViT recipe (AdamW, schedule, train subset, augmentation as `lmc_study.train`); from `cache`
    when stored. `model.lmc_meta` holds steps, wall time and the test losses."""
    r = profile.vit
    if r.dataset != "fashion_mnist":
        raise ValueError(f"the coarse task groups Fashion-MNIST's classes; vit.dataset is {r.dataset!r}")
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"task weight must lie in [0, 1], got {weight}")
    train = image_splits(profile).train
    build = {"num_classes": NUM_FINE + NUM_COARSE, "in_chans": train.in_chans, "img_size": train.img_size}
    spec = scalarised_spec(profile, weight, seed)
    if cache is not None and (hit := cache.load(spec)) is not None:
        model = build_model("vit", profile, **build)
        model.load_state_dict(hit[0])
        model.lmc_meta = {**hit[1], "from_cache": True}
        return model.to(device).eval()
    # A forked RNG: the seeded init and training's random draws leave the caller's global RNG as
    # it was, so a notebook's later draws do not depend on whether the model came from the cache.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        model = build_model("vit", profile, **build).to(device)
        steps_per_epoch = len(image_batches(train, r.batch_size))
        total = r.epochs * steps_per_epoch
        optimizer = torch.optim.AdamW(param_groups(model, r.weight_decay), lr=r.lr, fused=device.type == "cuda")
        scheduler = make_scheduler(optimizer, r.schedule, r.lr, total, round(r.warmup_epochs * steps_per_epoch))
        fwd = torch.compile(model) if r.compile and device.type == "cuda" else model
        start = time.perf_counter()
        model.train()
        for epoch in range(r.epochs):
            for x, y in image_batches(train, r.batch_size, device=device, shuffle=True, augment=r.augment, pad=r.pad,
                                      seed=epoch_seed(seed, epoch)):
                with autocast_context(device):
                    fine, coarse = task_losses(model_logits(fwd, x)[None], y)
                loss = (weight * fine + (1 - weight) * coarse).sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
    model.eval()
    meta = {"task_weight": float(weight), "seed": int(seed), "steps": total, "wall_s": time.perf_counter() - start,
            "device": str(device), "torch": torch.__version__}
    if cache is not None:
        cache.save(spec, model, meta)
    model.lmc_meta = {**meta, "from_cache": False}
    return model


# -- measuring -----------------------------------------------------------------------------------

@torch.no_grad()
def task_metrics(models: Sequence[nn.Module], data: Any) -> list[dict[str, float]]:
    """Test loss and accuracy of each task for each two-head model (raw or canonical), all in
    one ensemble forward per batch."""
    if not models:
        raise ValueError("task_metrics: no models")
    canon = [canonicalize(m) for m in models]
    config = canon[0].config
    params = {k: torch.stack([c.params()[k].detach() for c in canon]) for k in canon[0].params()}
    device = params["qk"].device
    E = len(canon)
    sums = torch.zeros(4, E, dtype=torch.float64, device=device)
    count = 0
    coarse_of = torch.tensor(COARSE_OF_FINE, device=device)
    for x, y in data:
        x, y = x.to(device), y.to(device)
        with autocast_context(device):
            logits = canonical_forward(params, config, x)
        fine, coarse = task_losses(logits, y)
        n = len(y)
        sums[0] += fine.double() * n
        sums[1] += coarse.double() * n
        sums[2] += (logits[..., :NUM_FINE].argmax(-1) == y).double().sum(-1)
        sums[3] += (logits[..., NUM_FINE:].argmax(-1) == coarse_of[y]).double().sum(-1)
        count += n
    if count == 0:
        raise ValueError("task_metrics: no data")
    values = (sums / count).T.tolist()
    return [dict(zip(("loss_fine", "loss_coarse", "acc_fine", "acc_coarse"), v, strict=True)) for v in values]


def hypervolume(points: Sequence[Sequence[float]], reference: Sequence[float] = REFERENCE) -> float:
    """Area dominated by `points` (two losses, lower is better) inside the box bounded by
    `reference`: the union of the rectangles [f_1, r_1] × [f_2, r_2]. Points not strictly
    better than the reference in both losses add nothing."""
    r1, r2 = reference
    inside = sorted((f1, f2) for f1, f2 in points if f1 < r1 and f2 < r2)
    area, best = 0.0, r2
    for f1, f2 in inside:  # by the first loss; a point adds the strip below the best second loss so far
        if f2 < best:
            area += (r1 - f1) * (best - f2)
            best = f2
    return area


def order_score(positions: Sequence[float], fine: Sequence[float], coarse: Sequence[float]) -> float:
    """Fraction of ordered pairs: over all i, j with positions p_i < p_j (towards A), the mean of
    [fine loss falls] and [coarse loss rises]. 1: the points sweep the trade-off in order;
    0.5: no order; ties count as unordered."""
    pairs = [(i, j) for i in range(len(positions)) for j in range(len(positions)) if positions[i] < positions[j]]
    if not pairs:
        raise ValueError("order_score needs at least two distinct positions")
    good = sum((fine[j] < fine[i]) + (coarse[j] > coarse[i]) for i, j in pairs)
    return good / (2 * len(pairs))


def dominated_fraction(points: Sequence[Sequence[float]], by: Sequence[Sequence[float]]) -> float:
    """Fraction of `points` that some point of `by` dominates (no worse in both losses, better
    in one): on a trade-off curve, the points that a scalarised model beats outright."""
    if not points:
        raise ValueError("dominated_fraction: no points")

    def beaten(p: Sequence[float]) -> bool:
        return any(q[0] <= p[0] and q[1] <= p[1] and (q[0] < p[0] or q[1] < p[1]) for q in by)
    return sum(beaten(p) for p in points) / len(points)


# -- the chapter ---------------------------------------------------------------------------------

def tradeoff(profile: Profile, device: torch.device, seed: int = 0, progress: bool = False
             ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One seed of the trade-off study (module docstring): (points, summaries). `points`: one
    row per model or curve point (set, position, the four test metrics); `summaries`: one row
    per set with its hypervolume, order score and training cost beyond the two endpoints
    (`models`, `steps`, `forward_points` = steps × points per step, `wall_s`)."""
    from . import experiments

    r, weights = profile.curves, profile.curves.task_weights
    if len(weights) < 2 or list(weights) != sorted(weights, reverse=True):
        raise ValueError(f"curves.task_weights must list ≥ 2 fine-task weights in decreasing order (A first, B last), "
                         f"got {weights}")
    data = experiments.study_data("vit", profile, device, seed=seed)
    cache = CheckpointCache()
    front = [train_scalarised(profile, w, seed, device, cache=cache) for w in weights]
    model_a, model_b = canonicalize(front[0]), canonicalize(front[-1])
    ts = lambda_grid(profile.experiment.lambdas)
    found: dict[str, tuple[list[float], list[dict[str, float]]]] = {"front": (list(weights), task_metrics(front, data.test))}
    line = [model_b.with_params({k: torch.lerp(v.detach(), model_a.params()[k].detach(), t)
                                 for k, v in model_b.params().items()}) for t in ts]
    found["line"] = (ts, task_metrics(line, data.test))
    interior = front[1:-1]
    costs = {"front": {"models": len(interior), "steps": sum(m.lmc_meta["steps"] for m in interior),
                       "forward_points": sum(m.lmc_meta["steps"] for m in interior),
                       "wall_s": sum(m.lmc_meta["wall_s"] for m in interior)},
             "line": {"models": 0, "steps": 0, "forward_points": 0, "wall_s": 0.0}}
    for name, kind, order in (("bezier", "bezier", 0.0), ("nurbs", "nurbs", 0.0), ("nurbs_order", "nurbs", r.order_weight)):
        curve = fit_curve(model_a, model_b, data.train, kind, r.mt_num_bends, steps=r.mt_steps, lr=r.lr,
                          weight_decay=r.weight_decay, objective=tradeoff_objective(weights[-1], weights[0], order),
                          points_per_step=2, seed=seed, device=device, progress=progress)
        found[name] = (ts, task_metrics(curve_points(curve, ts), data.test))
        costs[name] = {"models": 0, "steps": r.mt_steps, "forward_points": 2 * r.mt_steps,
                       "wall_s": curve.fit_info["wall_s"]}
    front_losses = [(m["loss_fine"], m["loss_coarse"]) for m in found["front"][1]]
    points, summaries = [], []
    for name, (positions, metrics) in found.items():
        points += [{"set": name, "seed": seed, "position": p, **m} for p, m in zip(positions, metrics, strict=True)]
        fine, coarse = [m["loss_fine"] for m in metrics], [m["loss_coarse"] for m in metrics]
        pairs = list(zip(fine, coarse, strict=True))
        summaries.append({"set": name, "seed": seed, "hypervolume": hypervolume(pairs),
                          "order_score": order_score(positions, fine, coarse),
                          "dominated": dominated_fraction(pairs, front_losses), "points": len(metrics), **costs[name]})
    endpoint_s = front[0].lmc_meta["wall_s"] + front[-1].lmc_meta["wall_s"]
    for s in summaries:
        s["endpoint_wall_s"] = endpoint_s
    return points, summaries


def tradeoff_study(profile: Profile, device: torch.device, progress: bool = False
                   ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`tradeoff` for seeds 0 … curves.mt_seeds − 1, concatenated."""
    points, summaries = [], []
    for seed in range(profile.curves.mt_seeds):
        p, s = tradeoff(profile, device, seed, progress)
        points += p
        summaries += s
    return points, summaries


def compare_with_front(summaries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per set (SETS order): hypervolume mean ± s.e. over the seeds, its paired
    difference from the front's, the share of the front's hypervolume gain over the free line
    that the set recovers (`gap_closed`: 0 = the line, 1 = the front; mean over seeds), order
    score, dominated fraction and cost (means)."""
    from .stats import mean_se

    by = {(s["set"], s["seed"]): s for s in summaries}
    seeds = sorted({s["seed"] for s in summaries})
    rows = []
    for name in [n for n in SETS if (n, seeds[0]) in by]:
        mine = [by[name, k] for k in seeds]
        diffs = [by[name, k]["hypervolume"] - by["front", k]["hypervolume"] for k in seeds]
        gaps = [(by[name, k]["hypervolume"] - by["line", k]["hypervolume"])
                / (by["front", k]["hypervolume"] - by["line", k]["hypervolume"]) for k in seeds
                if by["front", k]["hypervolume"] != by["line", k]["hypervolume"]]
        row = {"set": name, "label": SET_LABELS[name], "n": len(seeds)}
        for key in ("hypervolume", "order_score", "dominated", "wall_s", "steps", "forward_points", "models"):
            row[f"{key}_mean"], row[f"{key}_se"] = mean_se([m[key] for m in mine])
        row["hv_minus_front_mean"], row["hv_minus_front_se"] = mean_se(diffs)
        row["hv_lower_than_front"] = sum(d < 0 for d in diffs)
        row["gap_closed_mean"] = mean_se(gaps)[0] if gaps else None
        rows.append(row)
    return rows


def front_spread(points: Sequence[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """(lowest, highest) test loss of each task over the front's models, all seeds."""
    front = [p for p in points if p["set"] == "front"]
    return {task: (min(p[f"loss_{task}"] for p in front), max(p[f"loss_{task}"] for p in front)) for task in TASKS}


def tradeoff_verdicts(comparison: Sequence[dict[str, Any]], points: Sequence[dict[str, Any]]) -> list[str]:
    """Sentences generated from `compare_with_front` and the points: how wide the trade-off
    is, and how each curve's hypervolume, order and cost compare with the front's."""
    spread = front_spread(points)
    rows = {r["set"]: r for r in comparison}
    front = rows["front"]
    (f_lo, f_hi), (c_lo, c_hi) = spread["fine"], spread["coarse"]
    wider = "fine" if f_hi - f_lo > c_hi - c_lo else "coarse"
    out = [f"Across the scalarised models the fine-task test loss spans {f_lo:.3f}–{f_hi:.3f} and the coarse-task "
           f"loss {c_lo:.3f}–{c_hi:.3f}: the weighting moves the {wider} task's loss "
           f"{max(f_hi - f_lo, c_hi - c_lo) / max(min(f_hi - f_lo, c_hi - c_lo), 1e-12):.1f}× as much as the other's."]
    n = front["n"]
    for name in ("line", "bezier", "nurbs", "nurbs_order"):
        if name not in rows:
            continue
        r = rows[name]
        diff, se = r["hv_minus_front_mean"], r["hv_minus_front_se"]
        side = "below" if diff < 0 else "above"
        spread_txt = f" ± {se:.4f}" if se is not None else ""
        sign = f", lower on {r['hv_lower_than_front']} of {n} seed(s)" if n > 1 else " (one seed: no error bar)"
        gap = "" if r["gap_closed_mean"] is None or name == "line" else \
            f"; it recovers {100 * r['gap_closed_mean']:.0f}% of the front's hypervolume gain over the straight line"
        cost = "at no training cost beyond the endpoints" if not r["steps_mean"] else (
            f"for {r['wall_s_mean']:.1f} s of curve training ({r['steps_mean']:.0f} steps of "
            f"{r['forward_points_mean'] / r['steps_mean']:.0f} points) against {front['wall_s_mean']:.1f} s for the front's "
            f"{front['models_mean']:.0f} extra model(s) ({front['steps_mean']:.0f} steps)")
        out.append(f"{r['label'][:1].upper() + r['label'][1:]}: hypervolume {r['hypervolume_mean']:.4f}, {abs(diff):.4f}{spread_txt} "
                   f"{side} the front's{sign}{gap}; order score {r['order_score_mean']:.2f} (front "
                   f"{front['order_score_mean']:.2f}); {100 * r['dominated_mean']:.0f}% of its points are dominated "
                   f"by a scalarised model; {cost}.")
    return out
