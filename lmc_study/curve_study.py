"""Chapter 09's first question: trained curves against straight lines, between the same pairs.

For every independent pair of the profile: the barrier of the raw line, of the canonical line and
of a curve between the unaligned endpoints, of the line after weight matching and after learned
matching, and of a curve after alignment; with what each cost to find and to measure, and the
paired differences the chapter's verdicts are generated from.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from lmc_core.adapters import canonicalize
from lmc_core.curves import Curve, curve_barrier, fit_curve
from lmc_core.interpolation import barrier

from . import experiments
from .stats import mean_se

CURVE_METHODS = ("vanilla", "canonical_line", "curve", "weight_matching", "learned_matching", "aligned_curve")
CURVE_LABELS = {
    "vanilla": "raw line (vanilla)",
    "canonical_line": "canonical line, unaligned",
    "curve": "curve, unaligned",
    "weight_matching": "line after weight matching",
    "learned_matching": "line after learned matching",
    "aligned_curve": "curve after alignment",
}


def _timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def curves_vs_lines(kind: str, profile: Any, device: torch.device, progress: bool = False) -> list[dict[str, Any]]:
    """For every independent pair of the profile: the barrier of the raw line, of the canonical
    line and of a curve between the unaligned endpoints, of the line after weight matching and
    after learned matching, and of a curve after `profile.curves.align_method`; with what each
    cost to find (`prep_s`: alignment and/or curve fit, wall seconds; `steps`: gradient steps)
    and to measure (`eval_s`). Rows as `experiments.result_row`, methods CURVE_METHODS."""
    data = experiments.study_data(kind, profile, device)
    rows: list[dict[str, Any]] = []
    for sa, sb in experiments.seed_pairs(profile.experiment.n_pairs):
        model_a, model_b = experiments.trained_models(kind, profile, [sa, sb], device, progress)
        rows += _pair_rows(model_a, model_b, [sa, sb], profile, data, device, progress)
    return rows


def _pair_rows(model_a: nn.Module, model_b: nn.Module, seeds: list[int], profile: Any, data: Any,
               device: torch.device, progress: bool) -> list[dict[str, Any]]:
    """The rows of `curves_vs_lines` for one pair."""
    r = profile.curves
    lm_steps = profile.align.lm_epochs * min(len(data.train), profile.align.lm_steps_per_epoch or len(data.train))
    (canon_a, canon_b), canon_s = _timed(lambda: (canonicalize(model_a), canonicalize(model_b)))
    found, align_s = {}, {}
    for method in dict.fromkeys(("weight_matching", "learned_matching", r.align_method)):
        found[method], align_s[method] = _timed(experiments.align_by_name, method, model_a, model_b, profile, data)

    def fit(a: nn.Module, b: nn.Module) -> Curve:
        return fit_curve(a, b, data.train, r.kind, r.num_bends, steps=r.steps, lr=r.lr,
                         weight_decay=r.weight_decay, seed=seeds[0], device=device, progress=progress)

    curve, aligned = fit(canon_a, canon_b), found[r.align_method]
    aligned_curve = fit(aligned.model_a, aligned.model_b)
    own_steps = lm_steps if r.align_method == "learned_matching" else 0
    wm, lm = found["weight_matching"], found["learned_matching"]
    plan = [  # (method, measure(data, lambdas), prep_s, steps, extra)
        ("vanilla", lambda *x: barrier(model_a, model_b, *x), 0.0, 0, {}),
        ("canonical_line", lambda *x: barrier(canon_a, canon_b, *x), canon_s, 0, {}),
        ("curve", lambda *x: curve_barrier(curve, *x), canon_s + curve.fit_info["wall_s"], r.steps,
         {"bend_offsets": curve.bend_offsets()}),
        ("weight_matching", lambda *x: barrier(wm.model_a, wm.model_b, *x), align_s["weight_matching"], 0, {}),
        ("learned_matching", lambda *x: barrier(lm.model_a, lm.model_b, *x), align_s["learned_matching"],
         lm_steps, {}),
        ("aligned_curve", lambda *x: curve_barrier(aligned_curve, *x),
         align_s[r.align_method] + aligned_curve.fit_info["wall_s"], own_steps + r.steps,
         {"bend_offsets": aligned_curve.bend_offsets(), "align_method": r.align_method}),
    ]
    rows = []
    for method, measure, prep_s, steps, extra in plan:
        result, eval_s = _timed(measure, data.test, profile.experiment.lambdas)
        rows.append(experiments.result_row(method, seeds, result, prep_s=prep_s, steps=steps, eval_s=eval_s, **extra))
    return rows


def paired_difference(rows: Sequence[Mapping[str, Any]], method: str, baseline: str,
                      metric: str = "loss_barrier") -> dict[str, Any]:
    """`method` − `baseline` on `metric` over the pairs (rows' `models`) that have both: mean,
    standard error (None for one pair), n, and the number of pairs where it is lower / higher."""
    def by_pair(name: str) -> dict[tuple, float]:
        return {tuple(r["models"]): float(r[metric]) for r in rows if r["method"] == name}

    first, second = by_pair(method), by_pair(baseline)
    diffs = [first[p] - second[p] for p in first if p in second]
    if not diffs:
        raise ValueError(f"no pair has both {method!r} and {baseline!r} rows")
    mean, se = mean_se(diffs)
    return {"method": method, "baseline": baseline, "metric": metric, "mean": mean, "se": se, "n": len(diffs),
            "lower": sum(d < 0 for d in diffs), "higher": sum(d > 0 for d in diffs)}


CURVE_COMPARISONS = (  # (method, baseline): what the chapter's verdicts compare
    ("curve", "canonical_line"),  # what training buys over the line the curve started from
    ("curve", "weight_matching"),  # a curve vs data-free alignment
    ("curve", "learned_matching"),  # a curve vs the paper's alignment: does it find what alignment finds?
    ("aligned_curve", "learned_matching"),  # both: alignment, then a curve
)


def curve_comparisons(rows: Sequence[Mapping[str, Any]], metric: str = "loss_barrier") -> list[dict[str, Any]]:
    """`paired_difference` for every CURVE_COMPARISONS pair present in `rows`, with the mean
    preparation time (`prep_s`) of each side."""
    out = []
    present = {r["method"] for r in rows}
    for method, baseline in CURVE_COMPARISONS:
        if method in present and baseline in present:
            d = paired_difference(rows, method, baseline, metric)
            for side, name in (("prep_s", method), ("baseline_prep_s", baseline)):
                times = [r["prep_s"] for r in rows if r["method"] == name]
                d[side] = sum(times) / len(times)
            out.append(d)
    return out


def curve_verdicts(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """One sentence per comparison of `curve_comparisons`, generated from the numbers."""
    out = []
    for d in curve_comparisons(rows):
        m, b = CURVE_LABELS[d["method"]], CURVE_LABELS[d["baseline"]]
        direction = "lower" if d["mean"] < 0 else "higher"
        error = f" ± {d['se']:.3f}" if d["se"] is not None else ""
        noise = " (within two standard errors of no difference)" if d["se"] is not None and \
            abs(d["mean"]) < 2 * d["se"] else ""
        price = f"{d['prep_s']:.1f} s against {d['baseline_prep_s']:.1f} s"
        if d["baseline_prep_s"] >= 0.05:  # below that a ratio only measures canonicalisation
            price += f" ({d['prep_s'] / d['baseline_prep_s']:.1f}×)"
        out.append(f"{m[:1].upper() + m[1:]} vs {b}: loss barrier {direction} by {abs(d['mean']):.3f}{error} nats{noise}, "
                   f"lower on {d['lower']} of {d['n']} pair(s); finding it took {price}.")
    return out
