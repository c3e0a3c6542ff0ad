"""Chapter 10: every unlearning method on every seed, its metrics, and its barrier to retraining.

``study`` runs every method on every seed of ``profile.unlearn`` and measures the loss barrier
between each model and the retrained one (vanilla, weight matching, learned matching), with a
second retrained model (another seed) as the reference; the summaries and verdicts below are
generated from those rows. The methods and metrics themselves are in `unlearning`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from lmc_core.cache import CheckpointCache
from lmc_core.interpolation import barrier

from . import experiments
from .data import image_batches
from .models import build_model
from .profiles import Profile
from .stats import mean_se
from .train import model_spec
from .unlearning import (
    ALIGNMENTS,
    DAMAGED_NATS,
    LABELS,
    METHODS,
    MODELS,
    OTHER_SEED,
    RETRAIN_SEED,
    UNLEARN_VERSION,
    ForgetSplit,
    build_args,
    forget_set,
    take,
    unlearn,
    unlearning_metrics,
)


def unlearn_spec(method: str, split: ForgetSplit, profile: Profile, seed: int) -> dict[str, Any]:
    """What decides the weights of ``method`` on ``split``: the model recipe and seed (of the
    original, or of the retrained model), the forget rows, and the unlearning settings."""
    spec = {"kind": "vit-unlearn", "method": method, "model": model_spec("vit", profile, seed),
            "forget": split.fingerprint(), "version": UNLEARN_VERSION}
    if method != "retrain":
        skip = ("seeds", "eval_retain", "lambdas")  # measurement settings, not the weights'
        spec["unlearn"] = {k: v for k, v in dataclasses.asdict(profile.unlearn).items() if k not in skip}
    return spec


def cached_unlearn(model: nn.Module | None, method: str, split: ForgetSplit, profile: Profile, *, seed: int,
                   device: torch.device, cache: CheckpointCache, progress: bool = False) -> nn.Module:
    """``unlearn`` through the checkpoint cache. ``model`` must be the profile's trained model of
    ``seed`` (its spec is the key); ``retrain`` ignores it and trains model seed ``seed``, so
    ``study`` passes another seed for it."""
    spec = unlearn_spec(method, split, profile, seed)
    if (hit := cache.load(spec)) is not None:
        state, meta = hit
        out = build_model("vit", profile, **build_args(split.retain))
        out.load_state_dict(state)
        out.lmc_meta = {**meta, "from_cache": True}
        return out.to(device).eval()
    out = unlearn(model, method, split.forget, split.retain, profile, seed=seed, device=device, progress=progress)
    cache.save(spec, out, out.lmc_meta)
    out.lmc_meta["from_cache"] = False
    return out


def study(profile: Profile, device: torch.device, *, progress: bool = False,
          cache: CheckpointCache | None = None) -> dict[str, list[dict[str, Any]]]:
    """Every model of MODELS for every seed of ``profile.unlearn``: one metrics row each, and one
    barrier row per (model, alignment) between the retrained model and that model (the retrained
    model itself is the reference's other end, so it has no barrier row)."""
    u = profile.unlearn
    cache = cache or CheckpointCache()
    data = experiments.study_data("vit", profile, device)
    train, test = data.train.dataset, data.test.dataset
    metric_rows: list[dict[str, Any]] = []
    barrier_rows: list[dict[str, Any]] = []
    for seed in u.seeds:
        split = forget_set(train, u.forget_size, seed)
        pick = torch.randperm(len(split.retain), generator=torch.Generator().manual_seed(seed))
        retain_eval = take(split.retain, pick[: u.eval_retain].sort().values)
        original = experiments.trained_models("vit", profile, [seed], device, progress)[0]
        models = {"original": original}
        for method in METHODS:
            models[method] = cached_unlearn(original, method, split, profile,
                                            seed=seed + RETRAIN_SEED if method == "retrain" else seed,
                                            device=device, cache=cache, progress=progress)
        models["retrain_other"] = cached_unlearn(None, "retrain", split, profile, seed=seed + OTHER_SEED,
                                                 device=device, cache=cache, progress=progress)
        for name, model in models.items():
            row = unlearning_metrics(model, split.forget, retain_eval, test, batch_size=profile.eval.batch_size,
                                     device=device)
            meta = getattr(model, "lmc_meta", {}) if name != "original" else {}
            smc = {k: meta[k] for k in ("hinge_open", "margin_mean") if k in meta}
            metric_rows.append({"kind": "metrics", "method": name, "seed": seed, "wall_s": meta.get("wall_s"),
                                **row, **smc})
        align_data = experiments.StudyData(
            "vit", image_batches(split.retain, profile.align.lm_batch_size, device=device, shuffle=True, seed=seed),
            data.test, f"retained set of seed {seed}")
        target = models["retrain"]
        for name in (m for m in MODELS if m != "retrain"):
            for alignment in ALIGNMENTS:
                found = experiments.align_by_name(alignment, target, models[name], profile, align_data)
                pair = (target, models[name]) if found is None else (found.model_a, found.model_b)
                result = barrier(*pair, data.test, lambdas=u.lambdas)
                barrier_rows.append(experiments.result_row(name, ["retrain", name], result, kind="barrier",
                                                           alignment=alignment, seed=seed))
    return {"metrics": metric_rows, "barriers": barrier_rows}


# -- summaries and verdicts -------------------------------------------------------------------------

def _by_seed(rows: Sequence[Mapping[str, Any]], method: str, metric: str, **where: Any) -> dict[int, float]:
    return {r["seed"]: float(r[metric]) for r in rows
            if r["method"] == method and r.get(metric) is not None and all(r.get(k) == v for k, v in where.items())}


def paired(rows: Sequence[Mapping[str, Any]], metric: str, method: str, reference: str, **where: Any
           ) -> dict[str, Any]:
    """``metric`` of ``method`` minus that of ``reference`` over the seeds both have (rows
    filtered by ``where``, e.g. alignment="vanilla"): mean ± s.e. of the difference, the number
    of seeds and how many of them are below 0."""
    a, b = _by_seed(rows, method, metric, **where), _by_seed(rows, reference, metric, **where)
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError(f"no seed has {metric} for both {method!r} and {reference!r}")
    diffs = [a[s] - b[s] for s in seeds]
    mean, se = mean_se(diffs)
    return {"method": method, "reference": reference, "metric": metric, "mean_diff": mean, "se": se,
            "n": len(seeds), "n_lower": sum(d < 0 for d in diffs), **where}


PERCENT = ("forget_acc", "retain_acc", "test_acc", "mia_forget_rate", "mia_test_rate", "mia_calibration_acc",
           "mia_heldout_acc")


def _format(metric: str, mean: float, se: float | None, sign: str = "") -> str:
    """Accuracies and rates in percent (the book's convention), everything else to 3 decimals."""
    scale, digits = (100.0, 1) if metric in PERCENT else (1.0, 3)
    return f"{scale * mean:{sign}.{digits}f}" + ("" if se is None else f" ± {scale * se:.{digits}f}")


def summary(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str], **where: Any) -> list[dict[str, Any]]:
    """Per model of MODELS: mean ± s.e. over seeds of each metric (rows filtered by ``where``);
    keys ``m`` (text), ``m_mean``, ``m_se``."""
    out = []
    for method in MODELS:
        chosen = [r for r in rows if r["method"] == method and all(r.get(k) == v for k, v in where.items())]
        if not chosen:
            continue
        row: dict[str, Any] = {"method": method, "label": LABELS[method], "n": len(chosen)}
        for m in metrics:
            values = [float(r[m]) for r in chosen if r.get(m) is not None]
            mean, se = mean_se(values) if values else (None, None)
            row[f"{m}_mean"], row[f"{m}_se"] = mean, se
            row[m] = "—" if mean is None else _format(m, mean, se)
        out.append(row)
    return out


def _relation(diff: Mapping[str, Any]) -> str:
    """'higher than' / 'lower than' when the mean difference is more than two standard errors
    from 0 (every seed on one side when there is no s.e.), else 'not distinguishable from'."""
    mean, se, n, lower = diff["mean_diff"], diff["se"], diff["n"], diff["n_lower"]
    if se is None:
        return "lower than" if lower == n else "higher than"
    if mean - 2 * se > 0:
        return "higher than"
    if mean + 2 * se < 0:
        return "lower than"
    return "not distinguishable from"


def _mean(rows: Sequence[Mapping[str, Any]], method: str, metric: str, **where: Any) -> float:
    return mean_se(list(_by_seed(rows, method, metric, **where).values()))[0]


def _difference(d: Mapping[str, Any]) -> str:
    unit = " points" if d["metric"] in PERCENT else ""
    return f"{_format(d['metric'], d['mean_diff'], d['se'], sign='+')}{unit}, lower on {d['n_lower']}/{d['n']} seeds"


def verdicts(metric_rows: Sequence[Mapping[str, Any]], barrier_rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Sentences generated from the numbers: each model's barrier to the retrained model against
    the retrained-vs-retrained reference (after each alignment), what learned matching does to
    it, the test accuracy each method costs, which membership-inference AUC comes closest to
    retraining's, and whether the two ManiF-SMC surrogates differ."""
    out = []
    approximate = [m for m in MODELS if m not in ("retrain", "retrain_other")]
    for alignment in ALIGNMENTS:
        ref = _mean(barrier_rows, "retrain_other", "loss_barrier", alignment=alignment)
        parts = [f"{LABELS[m]} {_relation(d)} it ({_difference(d)})" for m in approximate
                 for d in [paired(barrier_rows, "loss_barrier", m, "retrain_other", alignment=alignment)]]
        out.append(f"**{alignment.replace('_', ' ')}**: between two retrained models the loss barrier is "
                   f"{ref:.3f}; to the retrained model, " + "; ".join(parts) + ".")
    moved = [f"{LABELS[m]} {_relation(d)} vanilla ({_difference(d)})" for m in [*approximate, "retrain_other"]
             for d in [paired_alignments(barrier_rows, m, "learned_matching", "vanilla")]]
    out.append("After learned matching, the barrier to the retrained model is: " + "; ".join(moved) + ".")
    costs = [f"{LABELS[m]} {_difference(paired(metric_rows, 'test_acc', m, 'retrain'))}" for m in approximate]
    out.append("Test accuracy minus the retrained model's: " + "; ".join(costs) + ".")
    damaged = [(m, d) for m in approximate for d in [paired(metric_rows, "test_loss", m, "retrain")]
               if _relation(d) == "higher than" and d["mean_diff"] > DAMAGED_NATS]
    if damaged:
        out.append("Test loss above the retrained model's by more than " f"{DAMAGED_NATS} nats: " + "; ".join(
            f"{LABELS[m]} ({_difference(d)})" for m, d in damaged) + ". A barrier is measured against its "
            "endpoints, so a low barrier to such a model says the path is no worse than its damaged end, "
            "not that the model reached the retrained basin.")
    target = _mean(metric_rows, "retrain", "mia_auc")
    gaps = {m: abs(_mean(metric_rows, m, "mia_auc") - target) for m in approximate}
    best, worst = min(gaps, key=gaps.get), max(gaps, key=gaps.get)
    calibration = _mean(metric_rows, "original", "mia_heldout_acc")
    out.append(f"Membership inference: the attack tells retained from test samples of the original model with "
               f"balanced accuracy {100 * calibration:.1f}% on samples it was not calibrated on (50%: chance). Its AUC on the forget set is {target:.3f} for "
               f"the retrained model (ideal 0.5); closest to that: {LABELS[best]} ({gaps[best]:.3f} away), "
               f"farthest: {LABELS[worst]} ({gaps[worst]:.3f} away).")
    gap = max(abs(a - b) for metric in ("forget_acc", "retain_acc", "test_acc", "mia_auc")
              for a, b in _pairs(metric_rows, "manif_smc", "manif_smc_trained", metric))
    surrogate = ("give the same metrics on every seed" if gap < 1e-9 else
                 f"differ by at most {gap:.4f} in any metric on any seed")
    hinge = mean_se([float(r["hinge_open"]) for r in metric_rows if r.get("hinge_open") is not None])[0]
    out.append(f"ManiF-SMC with the untrained and the briefly trained surrogate {surrogate}; the hinge was "
               f"open on {100 * hinge:.0f}% of their steps, and while it is open the margin is a constant "
               "of the loss that does not change its gradient.")
    return out


def paired_alignments(rows: Sequence[Mapping[str, Any]], method: str, alignment: str, reference: str
                      ) -> dict[str, Any]:
    """``paired`` across alignments: the loss barrier of ``method`` after ``alignment`` minus
    after ``reference`` (another alignment), seed by seed."""
    relabel = [{**r, "method": r["alignment"]} for r in rows if r["method"] == method]
    return {**paired(relabel, "loss_barrier", alignment, reference), "method": method}


def _pairs(rows: Sequence[Mapping[str, Any]], a: str, b: str, metric: str) -> list[tuple[float, float]]:
    x, y = _by_seed(rows, a, metric), _by_seed(rows, b, metric)
    return [(x[s], y[s]) for s in sorted(set(x) & set(y))]


def barrier_table(barrier_rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per model: the loss barrier to the retrained model after each alignment (mean ±
    s.e. over seeds, text under the alignment's name) and the model's own test loss."""
    table = []
    for method in (m for m in MODELS if m != "retrain"):
        rows = [r for r in barrier_rows if r["method"] == method]
        if not rows:
            continue
        row: dict[str, Any] = {"method": method, "label": LABELS[method], "n": len({r["seed"] for r in rows})}
        for alignment in ALIGNMENTS:
            row[alignment] = summary(rows, ["loss_barrier"], alignment=alignment)[0]["loss_barrier"]
        row["test_loss"] = summary(rows, ["loss_b"], alignment="vanilla")[0]["loss_b"]
        table.append(row)
    return table


def paired_table(metric_rows: Sequence[Mapping[str, Any]], barrier_rows: Sequence[Mapping[str, Any]]
                 ) -> list[dict[str, Any]]:
    """The paired comparisons behind the verdicts, one row each: every model's barrier minus the
    reference's (per alignment), and every approximate method's test accuracy and forget-set
    attack AUC minus the retrained model's. ``diff`` is the text "mean ± s.e."."""
    approximate = [m for m in MODELS if m not in ("retrain", "retrain_other")]
    out = []
    for alignment in ALIGNMENTS:
        for m in approximate:
            d = paired(barrier_rows, "loss_barrier", m, "retrain_other", alignment=alignment)
            out.append({**d, "label": LABELS[m], "what": f"barrier − reference, {alignment.replace('_', ' ')}"})
    for metric, what in (("test_acc", "test accuracy − retrain's (points)"), ("mia_auc", "attack AUC − retrain's")):
        for m in approximate:
            out.append({**paired(metric_rows, metric, m, "retrain"), "label": LABELS[m], "what": what})
    for d in out:
        d["diff"] = _format(d["metric"], d["mean_diff"], d["se"], sign="+")
        d["lower"] = f"{d['n_lower']}/{d['n']}"
    return out
