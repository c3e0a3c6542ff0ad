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
  B (t = 0): every set of models below shares those two. Beside them, the two single-task
  models (w = 1 and w = 0, same recipe and budget): the reference of EXTRA's Δm.
- Curves between B and A (`lmc_core.curves`), two points t_1, t_2 ~ U(0, 1) per step for all:
  - "extra": EXTRA's objective as its CityScapes trainer has it (zzpustc/EXTRA @ 74c9281,
    experiments/cityscapes/trainer.py lines 166-170; `extra_objective`): fixed task weights,
    plus the order-aware term weighted by the bump p = mean_i exp(−|t_i − ½|); the NYUv2
    trainer's guard (experiments/nyuv2/trainer.py line 166: a step whose loss exceeds 20 is
    skipped). NURBS with 5 control points, ours started on the line with weights 1;
  - "extra_init": the same with EXTRA's start (experiments/cityscapes/curves.py line 15 and
    trainer.py line 77: NURBS weights U(0, 1), unconstrained; bends at fresh initialisations);
  - "extra_bspline": the same objective with the NURBS weights fixed at 1 (a cubic B-spline):
    what the rational part adds;
  - "sweep": our earlier variant, kept as a named option: the task weights swept linearly
    along t, w(t) = lerp(w_B, w_A, t), plus the order-aware term (`sweep_objective`).
- The straight (canonical) line between the endpoints: the free baseline.

Measured on the test subset, at `mt_points` values of t (EXTRA evaluates 61): each task's loss
and accuracy along every path; per path the maximum and the mean of each task's loss, the
share of its points the front dominates and how far behind the front each point is
(`behind_front`: by how much a front model beats it in both losses; 0 when none does), the
2-D hypervolume against two references (the chance losses REFERENCE = (ln 10, ln 4), and a
tight one just beyond the worst loss of the front, where a bad stretch shows), the order score
along t, EXTRA's Δm against the single-task models, and the training cost (steps, wall time).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
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
SINGLE_TASK = {"fine": 1.0, "coarse": 0.0}  # fine-task weight of each single-task model (Δm's reference)
CURVE_SETS = ("extra", "extra_init", "extra_bspline", "sweep")
SETS = ("front", "line", *CURVE_SETS)
MULTITASK_VERSION = 1  # bump when a change to train_scalarised changes the weights it gives (cache key)
SET_LABELS = {"front": "linear scalarisation (one model per weighting)", "line": "straight line (canonical)",
              "extra": "NURBS, EXTRA's objective", "extra_init": "NURBS, EXTRA's objective and start",
              "extra_bspline": "B-spline (weights fixed at 1), EXTRA's objective",
              "sweep": "NURBS, weights swept along t (ours)"}
EQUIVALENCE_NATS = 0.01  # a path differing from another by less than this, per point, is "no different"
EQUIVALENCE_SHARE = 0.05  # the same for a share of the front's hypervolume (5 points)


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


def sweep_objective(weight_b: float, weight_a: float, order_weight: float = 0.0) -> Objective:
    """Our earlier variant (not EXTRA's): at each point the scalarisation w(t) L_fine +
    (1 − w(t)) L_coarse with w(t) = lerp(weight_b, weight_a, t), averaged over the points,
    plus `order_weight` · `order_term`."""
    def objective(logits: Tensor, inputs: Tensor, targets: Tensor | None, ts: Tensor) -> Tensor:
        fine, coarse = task_losses(logits, targets)
        w = torch.lerp(torch.full_like(fine, weight_b), torch.full_like(fine, weight_a), ts.to(fine.dtype))
        loss = (w * fine + (1 - w) * coarse).mean()
        return loss + order_weight * order_term(fine, coarse, ts) if order_weight else loss
    return objective


def extra_objective(weight_fine: float, weight_coarse: float) -> Objective:
    """EXTRA's objective as its CityScapes trainer computes it (zzpustc/EXTRA @ 74c9281,
    experiments/cityscapes/trainer.py lines 166-170), for two points t_1, t_2:
    mean_i (w_f L_fine(t_i) + w_c L_coarse(t_i)) + p · order, with fixed task weights, the
    bump p = mean_i exp(−|t_i − ½|) and `order_term` (theirs: seg 1, depth 10, p on the order
    term; the task weights are not swept along t)."""
    def objective(logits: Tensor, inputs: Tensor, targets: Tensor | None, ts: Tensor) -> Tensor:
        fine, coarse = task_losses(logits, targets)
        bump = torch.exp(-(ts - 0.5).abs()).mean().to(fine.dtype)
        return (weight_fine * fine + weight_coarse * coarse).mean() + bump * order_term(fine, coarse, ts)
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


def behind_front(point: Sequence[float], front: Sequence[Sequence[float]]) -> float:
    """How far `point` is behind the front: the largest margin by which one front model beats it
    in both losses, max_q min_i (p_i − q_i), clipped at 0 (0: no front model beats it in both;
    EXTRA's and the additive-ε indicator's notion of distance to a front)."""
    if not front:
        raise ValueError("behind_front: empty front")
    return max(0.0, max(min(p - q for p, q in zip(point, f, strict=True)) for f in front))


def tight_reference(front: Sequence[Sequence[float]], slack: float = 0.05) -> tuple[float, float]:
    """A hypervolume reference just beyond the worst loss of the front: each task's worst front
    loss plus `slack` of the front's spread on that task. Inside this box a point behind the
    front adds little and a point beyond it nothing, so hypervolume differences are not
    swamped by the area up to chance."""
    out = []
    for i in range(2):
        values = [f[i] for f in front]
        out.append(max(values) + slack * max(max(values) - min(values), 1e-6))
    return out[0], out[1]


def delta_m(accuracies: Sequence[float], single: Sequence[float]) -> float:
    """EXTRA's relative multi-task gain (%) for metrics where higher is better: the mean over the
    tasks of (M_t − M_single,t) / M_single,t · 100 (zzpustc/EXTRA experiments/cityscapes/utils.py line 56, `delta_fn`,
    with the tasks' accuracies as the metrics)."""
    if len(accuracies) != len(single) or not single:
        raise ValueError(f"delta_m: {len(accuracies)} accuracies against {len(single)} single-task ones")
    return 100.0 * sum((m - s) / s for m, s in zip(accuracies, single, strict=True)) / len(single)


def stretches(positions: Sequence[float], flags: Sequence[bool]) -> list[tuple[float, float]]:
    """The maximal runs of consecutive positions where `flags` holds, as (first, last) positions."""
    out, start, last = [], None, None
    for p, f in zip(positions, flags, strict=True):
        if f and start is None:
            start = p
        if f:
            last = p
        elif start is not None:
            out.append((start, last))
            start = None
    if start is not None:
        out.append((start, last))
    return out


def path_summary(name: str, positions: Sequence[float], metrics: Sequence[dict[str, float]],
                 front: Sequence[Sequence[float]], single_acc: Sequence[float]) -> dict[str, Any]:
    """One path's (or the front's) measures: each task's maximum and mean loss and lowest
    accuracy along it, the share of its points the front dominates, how far behind the front its points are (mean and
    maximum of `behind_front`), hypervolume at the chance and the tight reference, order score,
    and EXTRA's Δm (its best point and its mean along the path)."""
    pairs = [(m["loss_fine"], m["loss_coarse"]) for m in metrics]
    behind = [behind_front(p, front) for p in pairs]
    dms = [delta_m((m["acc_fine"], m["acc_coarse"]), single_acc) for m in metrics]
    out: dict[str, Any] = {"set": name, "points": len(metrics)}
    for task in TASKS:
        losses = [m[f"loss_{task}"] for m in metrics]
        out[f"max_{task}"], out[f"mean_{task}"] = max(losses), sum(losses) / len(losses)
        out[f"min_acc_{task}"] = min(m[f"acc_{task}"] for m in metrics)
    tight = tight_reference(front)
    out.update({"dominated": dominated_fraction(pairs, front), "behind_mean": sum(behind) / len(behind),
                "behind_max": max(behind), "hypervolume": hypervolume(pairs), "hypervolume_tight": hypervolume(pairs, tight),
                "hypervolume_share": hypervolume(pairs, tight) / max(hypervolume(front, tight), 1e-12),
                "order_score": order_score(positions, [p[0] for p in pairs], [p[1] for p in pairs]),
                "delta_m_best": max(dms), "delta_m_mean": sum(dms) / len(dms)})
    return out


# -- the chapter ---------------------------------------------------------------------------------

def fresh_bends(profile: Profile, count: int, seed: int) -> list[nn.Module]:
    """`count` freshly initialised two-head ViTs (seeds derived from `seed`): EXTRA's code starts
    every bend of its curve at a fresh initialisation (`init_linear` is commented out)."""
    train = image_splits(profile).train
    build = {"num_classes": NUM_FINE + NUM_COARSE, "in_chans": train.in_chans, "img_size": train.img_size}
    out = []
    with torch.random.fork_rng():
        for k in range(count):
            torch.manual_seed(10_000 + 100 * seed + k)
            out.append(build_model("vit", profile, **build))
    return out


def curve_options(name: str, profile: Profile, seed: int) -> dict[str, Any]:
    """`fit_curve` options of the trade-off curve `name` (CURVE_SETS)."""
    r = profile.curves
    weights = r.task_weights
    if name == "sweep":
        return {"kind": "nurbs", "objective": sweep_objective(weights[-1], weights[0], r.order_weight)}
    common = {"kind": "nurbs", "objective": extra_objective(*r.extra_task_weights), "skip_loss_above": r.loss_guard}
    if name == "extra":
        return common
    if name == "extra_bspline":
        return {**common, "weights": "fixed"}
    if name == "extra_init":
        g = torch.Generator().manual_seed(seed)
        return {**common, "weights": "raw", "init_weights": torch.rand(r.mt_num_bends, generator=g).tolist(),
                "bends": fresh_bends(profile, r.mt_num_bends - 2, seed)}
    raise ValueError(f"unknown trade-off curve {name!r}; valid: {', '.join(CURVE_SETS)}")


def first_images(batches: Any, n: int | None) -> list[tuple[Tensor, Tensor]]:
    """The first `n` images of `batches` (all when n is None), as a list of batches."""
    out, seen = [], 0
    for x, y in batches:
        if n is not None and seen >= n:
            break
        take = len(y) if n is None else min(len(y), n - seen)
        out.append((x[:take], y[:take]))
        seen += take
    return out


def tradeoff(profile: Profile, device: torch.device, seed: int = 0, progress: bool = False
             ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One seed of the trade-off study (module docstring): (points, summaries). `points`: one
    row per model or path point (set, position, the four test metrics; the single-task models
    as sets "single_fine" / "single_coarse"); `summaries`: one row per set (`path_summary`) with
    its training cost beyond the two endpoints (`models`, `steps`, `forward_points` = steps ×
    points per step, `wall_s`) and, for curves, the fitted NURBS weights and skipped steps."""
    from . import experiments

    r, weights = profile.curves, profile.curves.task_weights
    if len(weights) < 2 or list(weights) != sorted(weights, reverse=True):
        raise ValueError(f"curves.task_weights must list ≥ 2 fine-task weights in decreasing order (A first, B last), "
                         f"got {weights}")
    data = experiments.study_data("vit", profile, device, seed=seed)
    test = first_images(data.test, r.mt_test_images)
    cache = CheckpointCache()
    front = [train_scalarised(profile, w, seed, device, cache=cache) for w in weights]
    single = {task: train_scalarised(profile, w, seed, device, cache=cache) for task, w in SINGLE_TASK.items()}
    single_metrics = dict(zip(single, task_metrics(list(single.values()), test), strict=True))
    single_acc = (single_metrics["fine"]["acc_fine"], single_metrics["coarse"]["acc_coarse"])
    model_a, model_b = canonicalize(front[0]), canonicalize(front[-1])
    ts = lambda_grid(r.mt_points)
    found: dict[str, tuple[list[float], list[dict[str, float]]]] = {"front": (list(weights), task_metrics(front, test))}
    line = [model_b.with_params({k: torch.lerp(v.detach(), model_a.params()[k].detach(), t)
                                 for k, v in model_b.params().items()}) for t in ts]
    found["line"] = (ts, task_metrics(line, test))
    interior = front[1:-1]
    costs: dict[str, dict[str, Any]] = {
        "front": {"models": len(interior), "steps": sum(m.lmc_meta["steps"] for m in interior),
                  "forward_points": sum(m.lmc_meta["steps"] for m in interior),
                  "wall_s": sum(m.lmc_meta["wall_s"] for m in interior)},
        "line": {"models": 0, "steps": 0, "forward_points": 0, "wall_s": 0.0}}
    for name in CURVE_SETS:
        curve = fit_curve(model_a, model_b, data.train, num_bends=r.mt_num_bends, steps=r.mt_steps, lr=r.lr,
                          weight_decay=r.weight_decay, points_per_step=2, seed=seed, device=device, progress=progress,
                          **curve_options(name, profile, seed))
        found[name] = (ts, task_metrics(curve_points(curve, ts), test))
        fitted = curve.weights()
        costs[name] = {"models": 0, "steps": r.mt_steps, "forward_points": 2 * r.mt_steps,
                       "wall_s": curve.fit_info["wall_s"], "skipped": curve.fit_info["skipped"],
                       "nurbs_weights": None if fitted is None else [float(w) for w in fitted.detach()],
                       "bend_offsets": curve.bend_offsets()}
    front_losses = [(m["loss_fine"], m["loss_coarse"]) for m in found["front"][1]]
    points: list[dict[str, Any]] = [{"set": f"single_{task}", "seed": seed, "position": SINGLE_TASK[task], **m}
                                    for task, m in single_metrics.items()]
    summaries = []
    endpoint_s = front[0].lmc_meta["wall_s"] + front[-1].lmc_meta["wall_s"]
    for name, (positions, metrics) in found.items():
        points += [{"set": name, "seed": seed, "position": p, **m} for p, m in zip(positions, metrics, strict=True)]
        summaries.append({**path_summary(name, positions, metrics, front_losses, single_acc), "seed": seed,
                          **costs[name], "endpoint_wall_s": endpoint_s,
                          "single_wall_s": sum(m.lmc_meta["wall_s"] for m in single.values())})
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


PATH_MEASURES = {  # summary key: (what it is, lower is better?)
    "max_fine": ("max fine loss along t", True), "max_coarse": ("max coarse loss along t", True),
    "mean_fine": ("mean fine loss", True), "mean_coarse": ("mean coarse loss", True),
    "behind_mean": ("mean distance behind the front", True), "behind_max": ("largest distance behind the front", True),
    "dominated": ("share dominated by the front", True),
    "hypervolume_tight": ("hypervolume (tight reference)", False), "hypervolume": ("hypervolume (chance reference)", False),
    "hypervolume_share": ("hypervolume (tight) as a share of the front's", False),
    "delta_m_best": ("best Δm (%)", False), "delta_m_mean": ("mean Δm (%)", False),
    "min_acc_fine": ("lowest fine accuracy", False), "min_acc_coarse": ("lowest coarse accuracy", False),
    "order_score": ("order score", False),
}


def path_table(summaries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per set (SETS order): every PATH_MEASURES key and the cost as mean and standard
    error over the seeds (`<key>_mean`, `<key>_se`), with `n` the number of seeds."""
    from .stats import mean_se

    seeds = sorted({s["seed"] for s in summaries})
    rows = []
    for name in SETS:
        mine = [s for s in summaries if s["set"] == name]
        if not mine:
            continue
        row: dict[str, Any] = {"set": name, "label": SET_LABELS[name], "n": len(mine)}
        for key in (*PATH_MEASURES, "wall_s", "steps", "forward_points", "models"):
            row[f"{key}_mean"], row[f"{key}_se"] = mean_se([float(m[key]) for m in mine])
        row["skipped"] = sum(m.get("skipped", 0) for m in mine)
        rows.append(row)
    if len(seeds) != len({s["seed"] for s in summaries if s["set"] == "front"}):
        raise ValueError("path_table: every seed needs its front")
    return rows


def path_comparisons(summaries: Sequence[dict[str, Any]], baseline: str = "line",
                     measures: Sequence[str] = ("max_fine", "max_coarse", "behind_mean", "hypervolume_share")
                     ) -> list[dict[str, Any]]:
    """Every curve minus `baseline` on each of `measures`, paired over the seeds (t interval),
    Holm across the curves of one measure; `verdict` as `stats.relation` with margin
    EQUIVALENCE_SHARE for a share of the front's hypervolume, EQUIVALENCE_NATS for the rest
    (losses and distances, in nats)."""
    from .stats import holm, paired_interval, relation

    by = {(s["set"], s["seed"]): s for s in summaries}
    seeds = sorted({s["seed"] for s in summaries})
    out = []
    for key in measures:
        family = []
        for name in CURVE_SETS:
            if (name, seeds[0]) not in by or name == baseline:
                continue
            diffs = [float(by[name, k][key]) - float(by[baseline, k][key]) for k in seeds]
            family.append({"set": name, "baseline": baseline, "measure": key, **paired_interval(diffs)})
        for d, p in zip(family, holm([d["p"] for d in family]), strict=True):
            d["p_holm"] = p
            d["verdict"] = relation(d, EQUIVALENCE_SHARE if key == "hypervolume_share" else EQUIVALENCE_NATS)
        out += family
    return out


def worse_stretches(points: Sequence[dict[str, Any]], name: str, baseline: str = "line",
                    margin: float = EQUIVALENCE_NATS) -> list[dict[str, Any]]:
    """Where path `name` is worse than `baseline` at the same t, task by task: the stretches of t
    where the mean over the seeds of (its loss − the baseline's) exceeds `margin`, each with its
    worst point (t, mean excess) and on how many seeds it exceeds the margin there."""
    def losses(set_name: str, task: str) -> dict[float, dict[int, float]]:
        out: dict[float, dict[int, float]] = {}
        for p in points:
            if p["set"] == set_name:
                out.setdefault(round(p["position"], 9), {})[p["seed"]] = p[f"loss_{task}"]
        return out

    found = []
    for task in TASKS:
        mine, base = losses(name, task), losses(baseline, task)
        ts = sorted(t for t in mine if t in base)
        excess = {t: [mine[t][k] - base[t][k] for k in mine[t] if k in base[t]] for t in ts}
        mean = {t: sum(v) / len(v) for t, v in excess.items()}
        for lo, hi in stretches(ts, [mean[t] > margin for t in ts]):
            inside = [t for t in ts if lo <= t <= hi]
            worst = max(inside, key=lambda t: mean[t])
            found.append({"task": task, "from": lo, "to": hi, "worst_t": worst, "worst": mean[worst],
                          "seeds_over": sum(v > margin for v in excess[worst]), "seeds": len(excess[worst])})
    return found


def front_spread(points: Sequence[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """(lowest, highest) test loss of each task over the front's models, all seeds."""
    front = [p for p in points if p["set"] == "front"]
    return {task: (min(p[f"loss_{task}"] for p in front), max(p[f"loss_{task}"] for p in front)) for task in TASKS}


def _interval(d: Mapping[str, Any], digits: int = 3) -> str:
    if d["lo"] is None:
        return f"{d['mean_diff']:+.{digits}f} (n = 1)"
    return f"{d['mean_diff']:+.{digits}f} [{d['lo']:+.{digits}f}, {d['hi']:+.{digits}f}]"


def tradeoff_verdicts(summaries: Sequence[dict[str, Any]], points: Sequence[dict[str, Any]]) -> list[str]:
    """Sentences generated from the run: how wide the trade-off is; which curve is closest to the
    front; for every curve, every stretch of t where it is worse than the straight line and
    what its paired differences from the line say; what the rational part and EXTRA's start
    change; and the cost against the front's."""
    table = {r["set"]: r for r in path_table(summaries)}
    comparisons = path_comparisons(summaries)
    (f_lo, f_hi), (c_lo, c_hi) = front_spread(points).values()
    n = table["front"]["n"]
    wider = "fine" if f_hi - f_lo > c_hi - c_lo else "coarse"
    out = [f"Across the scalarised models ({n} seed(s)) the fine-task test loss spans {f_lo:.3f}–{f_hi:.3f} and the "
           f"coarse-task loss {c_lo:.3f}–{c_hi:.3f}: the weighting moves the {wider} task's loss "
           f"{max(f_hi - f_lo, c_hi - c_lo) / max(min(f_hi - f_lo, c_hi - c_lo), 1e-12):.1f}× as much as the other's."]
    paths = [name for name in ("line", *CURVE_SETS) if name in table]
    closest = min(paths, key=lambda s: table[s]["behind_mean_mean"])
    out.append("Closest to the front, by the mean distance behind it along t: "
               + "; ".join(f"{table[s]['label']} {table[s]['behind_mean_mean']:.4f} nats "
                           f"({100 * table[s]['dominated_mean']:.0f}% of points dominated)"
                           for s in sorted(paths, key=lambda s: table[s]["behind_mean_mean"]))
               + f". The closest is the {table[closest]['label']}.")
    for name in CURVE_SETS:
        if name not in table:
            continue
        label = table[name]["label"]
        bad = worse_stretches(points, name)
        if bad:
            where = "; ".join((f"{b['task']} loss over t ∈ [{b['from']:.2f}, {b['to']:.2f}], worst at t = "
                               if b["from"] != b["to"] else f"{b['task']} loss at t = ")
                              + f"{b['worst_t']:.2f} (+{b['worst']:.3f} nats, {b['seeds_over']} of {b['seeds']} seeds)"
                              for b in bad)
            text = f"{label[:1].upper() + label[1:]} is worse than the straight line by more than " \
                   f"{EQUIVALENCE_NATS} nats at the same t on: {where}."
        else:
            text = f"{label[:1].upper() + label[1:]} is nowhere worse than the straight line by more than " \
                   f"{EQUIVALENCE_NATS} nats (mean over seeds, each t)."
        rel = [d for d in comparisons if d["set"] == name]
        text += " Against the line, paired over seeds (95% t interval, Holm): " + "; ".join(
            f"{PATH_MEASURES[d['measure']][0]} {_interval(d, 4)}: {d['verdict']}" for d in rel) + "."
        out.append(text)
    if "extra" in table and "extra_bspline" in table:
        weights = [s["nurbs_weights"] for s in summaries if s["set"] == "extra" and s.get("nurbs_weights")]
        spread = max(max(w) / min(w) for w in weights) if weights else 1.0
        d = path_comparisons(summaries, baseline="extra_bspline", measures=("behind_mean",))
        d = next((x for x in d if x["set"] == "extra"), None)
        if d is not None:
            out.append(f"The rational part: the fitted NURBS weights of EXTRA's curve end within a factor "
                       f"{spread:.2f} of each other (1 would be the B-spline); against the same curve with weights "
                       f"fixed at 1, its mean distance behind the front differs by {_interval(d, 4)} nats: "
                       f"{d['verdict']}.")
    front = table["front"]
    costs = [f"{table[s]['label']} {table[s]['wall_s_mean']:.1f} s ({table[s]['steps_mean']:.0f} steps of 2 points)"
             for s in CURVE_SETS if s in table]
    out.append(f"Cost beyond the two endpoints: the front's {front['models_mean']:.0f} extra model(s) took "
               f"{front['wall_s_mean']:.1f} s ({front['steps_mean']:.0f} steps); " + "; ".join(costs) + ".")
    skipped = sum(table[s]["skipped"] for s in CURVE_SETS if s in table)
    out.append(f"EXTRA's loss guard (skip a step whose loss exceeds the limit) skipped {skipped} step(s) in all.")
    return out
