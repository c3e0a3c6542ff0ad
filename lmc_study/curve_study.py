"""Chapter 09's first question: trained curves against straight lines, between the same pairs.

For every independent pair of the profile, nine paths from B to A:

- lines: the raw weights (vanilla), the canonical forms unaligned, the canonical forms and the
  raw weights after weight matching (B exported back to a ViT), and the canonical forms after
  learned matching (the paper's method);
- curves of two classes, each unaligned and after the profile's alignment: canonical curves
  (`lmc_core.curves.Curve`: control points are canonical circuits, a bend's QK and OV of rank
  up to the width) and weight-space curves (`WeightCurve`: control points are ordinary ViT
  weights, heads of the architecture's own rank, as Garipov's code trains them).

The alignment before the aligned curves keeps the all-ones direction of the residual stream
fixed (`keep_centred`), so its B is a ViT again (`lmc_core.export`) and both curve classes
start from the same aligned pair. Each row records what the path cost to find and to measure;
the paired differences of CURVE_COMPARISONS (t intervals over the pairs, Holm across the table)
are what the chapter's verdicts are generated from.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from lmc_core.adapters import canonicalize, export
from lmc_core.curves import Curve, WeightCurve, curve_barrier, fit_curve
from lmc_core.interpolation import barrier

from . import experiments
from .stats import holm, paired_interval, relation

CURVE_METHODS = ("vanilla", "canonical_line", "curve", "weight_curve", "weight_matching", "weight_line_aligned",
                 "learned_matching", "aligned_curve", "aligned_weight_curve")
CURVE_LABELS = {
    "vanilla": "raw line (vanilla)",
    "canonical_line": "canonical line, unaligned",
    "curve": "canonical curve, unaligned",
    "weight_curve": "weight-space curve, unaligned",
    "weight_matching": "canonical line after weight matching",
    "weight_line_aligned": "raw line after weight matching",
    "learned_matching": "line after learned matching",
    "aligned_curve": "canonical curve after alignment",
    "aligned_weight_curve": "weight-space curve after alignment",
}
CURVE_COMPARISONS = (  # (method, baseline): what the chapter's verdicts compare, one Holm family
    ("curve", "canonical_line"),  # what training buys over the line the canonical curve started from
    ("weight_curve", "vanilla"),  # the same in the model's own weights (Garipov's setting)
    ("curve", "weight_curve"),  # what canonical bends' extra freedom buys, unaligned
    ("aligned_curve", "aligned_weight_curve"),  # the same after alignment
    ("weight_line_aligned", "weight_matching"),  # raw vs canonical line after one alignment
    ("weight_curve", "learned_matching"),  # Garipov's curve vs the paper's line
    ("aligned_weight_curve", "learned_matching"),  # like with like: a ViT-class curve vs the paper's line
    ("aligned_curve", "learned_matching"),  # a canonical curve after alignment vs the paper's line
)
EQUIVALENCE_NATS = 0.01  # a barrier difference whose whole 95% interval lies within ± this reads "no difference"


def _timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def curves_vs_lines(kind: str, profile: Any, device: torch.device, progress: bool = False) -> list[dict[str, Any]]:
    """For every independent pair of the profile, the barriers of the CURVE_METHODS paths (module
    docstring), with what each cost to find (`prep_s`: alignment, export and/or curve fit, wall
    seconds; `steps`: gradient steps) and to measure (`eval_s`). Rows as
    `experiments.result_row`."""
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
    aligned, align_s = _timed(lambda: experiments.align_by_name(r.align_method, model_a, model_b, profile, data,
                                                                keep_centred=True))
    raw_b, export_s = _timed(export, aligned.model_b, model_b)  # the aligned B as a ViT again
    wm, wm_s = (aligned, align_s) if r.align_method == "weight_matching" else _timed(
        lambda: experiments.align_by_name("weight_matching", model_a, model_b, profile, data, keep_centred=True))
    lm, lm_s = _timed(experiments.align_by_name, "learned_matching", model_a, model_b, profile, data)

    def fit(a: nn.Module, b: nn.Module, space: str) -> Curve | WeightCurve:
        return fit_curve(a, b, data.train, r.kind, r.num_bends, steps=r.steps, lr=r.lr, weight_decay=r.weight_decay,
                         space=space, seed=seeds[0], device=device, progress=progress)

    own_steps = lm_steps if r.align_method == "learned_matching" else 0
    curves = {"curve": fit(canon_a, canon_b, "canonical"), "weight_curve": fit(model_a, model_b, "weights"),
              "aligned_curve": fit(aligned.model_a, aligned.model_b, "canonical"),
              "aligned_weight_curve": fit(model_a, raw_b, "weights")}
    aligned_prep = align_s + export_s
    plan = [  # (method, measure(data, lambdas), prep_s, steps)
        ("vanilla", lambda *x: barrier(model_a, model_b, *x), 0.0, 0),
        ("canonical_line", lambda *x: barrier(canon_a, canon_b, *x), canon_s, 0),
        ("weight_matching", lambda *x: barrier(wm.model_a, wm.model_b, *x), wm_s, 0),
        ("weight_line_aligned", lambda *x: barrier(model_a, raw_b, *x), aligned_prep, own_steps),
        ("learned_matching", lambda *x: barrier(lm.model_a, lm.model_b, *x), lm_s, lm_steps),
    ]
    for name, curve in curves.items():
        prep = curve.fit_info["wall_s"] + (aligned_prep if name.startswith("aligned") else canon_s)
        steps = r.steps + (own_steps if name.startswith("aligned") else 0)
        plan.append((name, lambda *x, c=curve: curve_barrier(c, *x), prep, steps))
    rows = []
    for method, measure, prep_s, steps in sorted(plan, key=lambda p: CURVE_METHODS.index(p[0])):
        result, eval_s = _timed(measure, data.test, profile.experiment.lambdas)
        extra: dict[str, Any] = {}
        if method in curves:
            extra = {"bend_offsets": curves[method].bend_offsets(), "space": curves[method].fit_info["space"]}
            if method.startswith("aligned"):
                extra["align_method"] = r.align_method
        rows.append(experiments.result_row(method, seeds, result, prep_s=prep_s, steps=steps, eval_s=eval_s, **extra))
    return rows


def paired_difference(rows: Sequence[Mapping[str, Any]], method: str, baseline: str,
                      metric: str = "loss_barrier") -> dict[str, Any]:
    """`method` − `baseline` on `metric` over the pairs (rows' `models`) that have both:
    `stats.paired_interval` (mean, t interval, median, per-pair values, p) with the pairs."""
    def by_pair(name: str) -> dict[tuple, float]:
        return {tuple(r["models"]): float(r[metric]) for r in rows if r["method"] == name}

    first, second = by_pair(method), by_pair(baseline)
    pairs = [p for p in first if p in second]
    if not pairs:
        raise ValueError(f"no pair has both {method!r} and {baseline!r} rows")
    return {"method": method, "baseline": baseline, "metric": metric, "pairs": pairs,
            **paired_interval([first[p] - second[p] for p in pairs])}


def curve_comparisons(rows: Sequence[Mapping[str, Any]], metric: str = "loss_barrier") -> list[dict[str, Any]]:
    """`paired_difference` for every CURVE_COMPARISONS pair present in `rows`, Holm-adjusted across
    them (`p_holm`), with `verdict` (`stats.relation`, margin EQUIVALENCE_NATS) and the mean
    preparation time of each side."""
    present = {r["method"] for r in rows}
    out = [paired_difference(rows, m, b, metric) for m, b in CURVE_COMPARISONS if m in present and b in present]
    for d, p in zip(out, holm([d["p"] for d in out]), strict=True):
        d["p_holm"] = p
        d["verdict"] = relation(d, EQUIVALENCE_NATS)
        for side, name in (("prep_s", d["method"]), ("baseline_prep_s", d["baseline"])):
            times = [r["prep_s"] for r in rows if r["method"] == name]
            d[side] = sum(times) / len(times)
    return out


def curve_verdicts(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """One sentence per comparison of `curve_comparisons`, generated from the numbers: the mean
    difference with its 95% t interval, the per-pair values, the verdict and the price."""
    out = []
    comparisons = curve_comparisons(rows)
    for d in comparisons:
        m, b = CURVE_LABELS[d["method"]], CURVE_LABELS[d["baseline"]]
        interval = "" if d["lo"] is None else f" [{d['lo']:+.3f}, {d['hi']:+.3f}]"
        per_pair = ", ".join(f"{v:+.3f}" for v in d["values"])
        words = {"lower": "lower", "higher": "higher", "no difference": f"no different (within ±{EQUIVALENCE_NATS})"}
        verdict = words.get(d["verdict"], "cannot tell which is lower")
        if d["verdict"] == "cannot tell" and (d["lo"] > 0 or d["hi"] < 0):
            verdict += f" after Holm across the {len(comparisons)} comparisons (the unadjusted interval excludes 0)"
        price = f"{d['prep_s']:.1f} s against {d['baseline_prep_s']:.1f} s"
        out.append(f"{m[:1].upper() + m[1:]} vs {b}: loss barrier {d['mean_diff']:+.3f}{interval} nats "
                   f"(per pair {per_pair}): {verdict}; lower on {d['n_lower']} of {d['n']} pair(s); "
                   f"finding it took {price}.")
    return out
