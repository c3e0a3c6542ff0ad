"""Our pairwise barriers against the paper's Table 2: per method, the method order, paired differences.

    records = book.find_results("book/runs/cpu")          # every results.json of one profile
    rows = compare_table2(table2_records(records))          # ours next to the paper, per method
    checks = method_order(rows_of_one_column)               # vanilla > AM > {WM, LM-perm} > LM
    print("\\n".join(order_sentences(checks, ...)))
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .paper import (
    COLUMNS,
    COMPARED_METHODS,
    CONTROL,
    ENDPOINTS,
    ORDER_RELATIONS,
    PAIRED_RELATIONS,
    PAPER_COLUMN_FOR,
    SHORT,
    TABLE2,
    TABLE2_METHODS,
    ZERO_BARRIER,
)
from .report import METHOD_LABELS
from .stats import mean_se


def paper_table(columns: Sequence[str] | None = None, digits: int = 2) -> list[dict[str, Any]]:
    """Table 2 as rows (one per method) with a "mean ± s.e." string per column."""
    columns = list(columns or COLUMNS)
    rows = []
    for method in TABLE2_METHODS:
        row: dict[str, Any] = {"method": method, "label": METHOD_LABELS.get(method, method)}
        for col in columns:
            mean, se = TABLE2[method][col]
            row[col] = f"{mean:.{digits}f} ± {se:.{digits}f}"
        rows.append(row)
    return rows


def kind_of(dataset: str) -> str:
    """"vit" for an image data set, "gpt2" for a text corpus."""
    from .data import IMAGE_DATASETS, TEXT_CORPORA

    if dataset in IMAGE_DATASETS:
        return "vit"
    if dataset in TEXT_CORPORA:
        return "gpt2"
    raise ValueError(f"unknown data set {dataset!r}; valid: {', '.join((*IMAGE_DATASETS, *TEXT_CORPORA))}")


def is_table2_record(record: Mapping[str, Any]) -> bool:
    """A pairwise chapter (its notebook name contains "pairwise", or it saved table="table2")."""
    return "pairwise" in str(record.get("notebook", "")) or record.get("table") == "table2"


def table2_records(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in records if is_table2_record(r) and not r.get("error")]


@dataclass
class Comparison:
    """Our mean ± s.e. for one method on one of our data sets, next to the paper's column."""

    kind: str
    dataset: str
    profile: str
    notebook: str
    method: str
    n: int
    loss_barrier: float
    loss_barrier_se: float | None
    acc_barrier: float | None
    paper_column: str | None
    paper_loss_barrier: float | None
    paper_loss_barrier_se: float | None

    def as_row(self, digits: int = 2) -> dict[str, Any]:
        def fmt(mean: float | None, se: float | None) -> str:
            if mean is None:
                return "—"
            return f"{mean:.{digits}f}" + (f" ± {se:.{digits}f}" if se is not None else "")

        paper_digits = 2  # the paper's own precision, whatever ours
        return {"model": "ViT" if self.kind == "vit" else "GPT-2", "dataset": self.dataset, "method": self.method,
                "label": METHOD_LABELS.get(self.method, self.method), "n": self.n,
                "ours": fmt(self.loss_barrier, self.loss_barrier_se),
                "paper_column": COLUMNS[self.paper_column]["label"] if self.paper_column else "—",
                "paper": f"{self.paper_loss_barrier:.{paper_digits}f} ± {self.paper_loss_barrier_se:.{paper_digits}f}"
                if self.paper_loss_barrier is not None else "—",
                "ours_mean": self.loss_barrier, "paper_mean": self.paper_loss_barrier,
                "acc_barrier": self.acc_barrier}


def compare_table2(records: Iterable[Mapping[str, Any]]) -> list[Comparison]:
    """Group the Table 2 rows of our pairwise records by (data set, method) and pair each group
    with the paper's number in the closest column. Rows with extra knobs (a λ sampler, a width)
    are left out: Table 2 is plain pairwise alignment."""
    groups: dict[tuple[str, str, str, str], list[Mapping[str, Any]]] = {}
    meta: dict[tuple[str, str, str, str], str] = {}
    for record in records:
        datasets = record.get("datasets") or [record.get("dataset")]
        dataset = datasets[0]
        kind = kind_of(dataset)
        for row in record.get("rows", []):
            method = row.get("method")
            if method not in COMPARED_METHODS or row.get("loss_barrier") is None:
                continue
            if any(k in row for k in ("lambda_sampler", "width_b", "init")):
                continue
            key = (kind, dataset, str(record.get("profile")), method)
            groups.setdefault(key, []).append(row)
            meta[key] = str(record.get("notebook"))
    out = []
    for (kind, dataset, profile, method), rows in sorted(
            groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2], COMPARED_METHODS.index(kv[0][3]))):
        loss, loss_se = mean_se([float(r["loss_barrier"]) for r in rows])
        accs = [float(r["acc_barrier"]) for r in rows if r.get("acc_barrier") is not None]
        column = PAPER_COLUMN_FOR.get((kind, dataset))
        paper_mean, paper_se = TABLE2[method][column] if column and method in TABLE2 else (None, None)
        out.append(Comparison(kind, dataset, profile, meta[(kind, dataset, profile, method)], method, len(rows),
                              loss, loss_se, mean_se(accs)[0] if accs else None, column, paper_mean, paper_se))
    return out


def endpoint_summary(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean test loss (and accuracy for images) of our endpoint models (the vanilla rows' two ends:
    every model once), next to what the paper reports for the closest column."""
    out = []
    for record in records:
        dataset = (record.get("datasets") or [record.get("dataset")])[0]
        kind = kind_of(dataset)
        seen: dict[int, tuple[float, float]] = {}
        for row in record.get("rows", []):
            if row.get("method") != "vanilla" or not row.get("models"):
                continue
            a, b = row["models"][:2]
            seen[a] = (row["loss_a"], row["acc_a"])
            seen[b] = (row["loss_b"], row["acc_b"])
        if not seen:
            continue
        loss, loss_se = mean_se([v[0] for v in seen.values()])
        acc, acc_se = mean_se([v[1] for v in seen.values()])
        column = PAPER_COLUMN_FOR.get((kind, dataset))
        paper = ENDPOINTS.get(column or "", {})
        paper_acc = paper.get("test_accuracy")
        out.append({"model": "ViT" if kind == "vit" else "GPT-2", "dataset": dataset,
                    "profile": record.get("profile"), "models": len(seen),
                    "test_loss": loss, "test_loss_se": loss_se,
                    "test_accuracy": acc if kind == "vit" else None,
                    "paper_column": COLUMNS[column]["label"] if column else "—",
                    "paper_test_loss": paper.get("test_loss"),
                    "paper_test_accuracy": paper_acc[0] if paper_acc else None})
    return out


def baseline_summary(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The trivial baselines a pairwise chapter saved (`baselines=`), as endpoint_summary rows."""
    out = []
    for record in records:
        dataset = (record.get("datasets") or [record.get("dataset")])[0]
        for b in record.get("baselines") or []:
            out.append({"model": f"baseline: {b['model']}", "dataset": dataset, "profile": record.get("profile"),
                        "models": "—", "test_loss": b["test_loss"], "test_loss_se": None,
                        "test_accuracy": b.get("test_accuracy"), "paper_column": "—",
                        "paper_test_loss": None, "paper_test_accuracy": None})
    return out


# -- the method order ----------------------------------------------------------------------------

@dataclass
class OrderCheck:
    """One relation `larger > smaller` of the paper's method order, on one data set."""

    larger: str
    smaller: str
    larger_value: float
    smaller_value: float
    larger_se: float | None
    smaller_se: float | None
    holds: bool
    # the difference exceeds twice its s.e. (paired over pairs when known; None: n < 2)
    resolved: bool | None

    @property
    def text(self) -> str:
        return f"{SHORT[self.larger]} > {SHORT[self.smaller]}"


@dataclass
class PairedDifference:
    """`larger − smaller` of one metric over the pairs that ran both methods: mean ± s.e. of the
    per-pair differences and how many of them are positive."""

    larger: str
    smaller: str
    differences: list[float]
    mean: float
    se: float | None
    positive: int

    @property
    def n(self) -> int:
        return len(self.differences)

    @property
    def resolved(self) -> bool | None:
        """The mean difference exceeds twice its standard error (None with a single pair)."""
        return None if self.se is None else abs(self.mean) > 2 * self.se

    @property
    def text(self) -> str:
        se = f" ± {self.se:.3f}" if self.se is not None else ""
        return (f"{SHORT.get(self.larger, self.larger)} − {SHORT.get(self.smaller, self.smaller)}: "
                f"{self.mean:+.3f}{se}, {self.positive}/{self.n} pair{'s' if self.n != 1 else ''}")


def barriers_by_pair(rows: Iterable[Mapping[str, Any]], metric: str) -> dict[tuple[int, ...], dict[str, float]]:
    """{pair: {method: value}} of the plain Table 2 rows (no λ sampler, width or init knob)."""
    out: dict[tuple[int, ...], dict[str, float]] = {}
    for row in rows:
        if row.get(metric) is None or not row.get("models") or any(
                k in row for k in ("lambda_sampler", "width_b", "init")):
            continue
        out.setdefault(tuple(row["models"]), {})[row["method"]] = float(row[metric])
    return out


def paired_differences(rows: Iterable[Mapping[str, Any]],
                       relations: Sequence[tuple[str, str]] = PAIRED_RELATIONS,
                       metric: str = "loss_barrier") -> list[PairedDifference]:
    """Per-pair differences `larger − smaller` for every relation whose two methods ran on at
    least one common pair (rows of one data set and profile: results.json rows)."""
    by_pair = barriers_by_pair(rows, metric)
    out = []
    for larger, smaller in relations:
        diffs = [v[larger] - v[smaller] for v in by_pair.values() if larger in v and smaller in v]
        if diffs:
            mean, se = mean_se(diffs)
            out.append(PairedDifference(larger, smaller, diffs, mean, se, sum(d > 0 for d in diffs)))
    return out


def paired_by_setting(rows: Iterable[Mapping[str, Any]], key: str, reference: str,
                      metric: str = "loss_barrier") -> list[PairedDifference]:
    """Per-pair differences `setting − reference` of rows that vary one knob (`key`, e.g.
    "lambda_sampler"), one PairedDifference per other setting, in the order they first appear."""
    by_pair: dict[tuple[int, ...], dict[str, float]] = {}
    for row in rows:
        if row.get(key) is not None and row.get(metric) is not None:
            by_pair.setdefault(tuple(row["models"]), {})[str(row[key])] = float(row[metric])
    settings = dict.fromkeys(s for values in by_pair.values() for s in values if s != reference)
    out = []
    for setting in settings:
        diffs = [v[setting] - v[reference] for v in by_pair.values() if setting in v and reference in v]
        if diffs:
            mean, se = mean_se(diffs)
            out.append(PairedDifference(setting, reference, diffs, mean, se, sum(d > 0 for d in diffs)))
    return out


def agree(n: int, one: str, many: str) -> str:
    """The verb that agrees with n: agree(1, "holds", "hold")."""
    return one if n == 1 else many


def difference_text(p: PairedDifference, digits: int = 3) -> str:
    """"+0.0220 ± 0.0040, 3/3 pairs": a paired difference without its relation."""
    se = f" ± {p.se:.{digits}f}" if p.se is not None else ""
    return f"{p.mean:+.{digits}f}{se}, {p.positive}/{p.n} pair{'s' if p.n != 1 else ''}"


def wm_iteration_sentence(histories: Mapping[str, Mapping[str, Sequence[float]]], tolerance: float = 0.005) -> str:
    """What the Fig. 7 run shows: per residual kind, the barrier at iteration 0 (nothing aligned),
    after the first and the last iteration, where it was lowest, and, when it rises again while
    the weight distance keeps falling, why."""
    parts = []
    for residual, h in histories.items():
        its, barriers, distances = list(h["iteration"]), list(h["loss_barrier"]), list(h["weight_distance"])
        low = min(range(len(barriers)), key=barriers.__getitem__)
        text = (f"{residual} residual: {barriers[0]:.3f} at iteration 0 (nothing aligned), {barriers[1]:.3f} "
                f"after iteration {its[1]}, {barriers[-1]:.3f} after the last ({its[-1]}); lowest "
                f"{barriers[low]:.3f} at iteration {its[low]}")
        if barriers[-1] > barriers[low] + tolerance:
            falling = all(b <= a + 1e-12 for a, b in zip(distances[low:-1], distances[low + 1:], strict=True))
            text += (f". It rises by {barriers[-1] - barriers[low]:.3f} after iteration {its[low]}"
                     + (" while the weight distance keeps falling: weight matching minimises the distance "
                        "between weights, not the loss along the path, and on this pair the two part ways"
                        if falling else ""))
        parts.append(text)
    out = "; ".join(parts) + "."
    if {"orthogonal", "permutation"} <= set(histories):
        o, p = histories["orthogonal"]["loss_barrier"][-1], histories["permutation"]["loss_barrier"][-1]
        out += (f" The orthogonal residual ends {'below' if o < p else 'at or above'} the permutation residual "
                f"({o:.3f} vs {p:.3f}): {'as' if o < p else 'unlike'} the paper, on one pair (not a test).")
    return out


def sampler_sentence(by_sampler: Sequence[Mapping[str, Any]], versus: Sequence[PairedDifference],
                     reference: str) -> str:
    """What the Fig. 6 run shows: the sampler with the lowest mean barrier and each sampler's
    paired difference from the reference, resolved or not, against the paper's finding."""
    best = min(by_sampler, key=lambda s: s["mean"])
    out = [f"Lowest mean barrier: {best['lambda_sampler']} ({best['loss_barrier']})."]
    for p in versus:
        word = {True: "resolved", False: "not resolved", None: "one pair"}[p.resolved]
        out.append(f"{p.larger} − {reference}: {difference_text(p, digits=4)} above ({word}).")
    wide = next((p for p in versus if p.larger == "uniform_0_1"), None)
    if wide is not None:
        agrees = wide.mean > 0 and wide.resolved
        out.append("The paper finds sampling near the midpoint better than U(0, 1): "
                   + ("these runs agree." if agrees else "these runs do not show it"
                      + (" (in the mean only)." if wide.mean > 0 else ".")))
    return " ".join(out)


def paired_rows(paired: Sequence[PairedDifference]) -> list[dict[str, Any]]:
    """A table of paired differences: relation, mean ± s.e., sign count, resolved."""
    return [{"difference": f"{SHORT.get(p.larger, p.larger)} − {SHORT.get(p.smaller, p.smaller)}",
             "mean ± s.e.": f"{p.mean:+.3f}" + (f" ± {p.se:.3f}" if p.se is not None else ""),
             "positive": f"{p.positive}/{p.n}",
             "resolved": {True: "yes", False: "no", None: "n/a (1 pair)"}[p.resolved],
             "in the paper's order": "yes" if (p.larger, p.smaller) in ORDER_RELATIONS else "no (not ordered)"}
            for p in paired]


def paired_by_group(records: Iterable[Mapping[str, Any]], metric: str = "loss_barrier"
                    ) -> dict[tuple[str, str, str], list[PairedDifference]]:
    """Paired differences per (kind, dataset, profile) of the pairwise records (the keys of
    `group_comparisons`)."""
    rows: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for record in records:
        dataset = (record.get("datasets") or [record.get("dataset")])[0]
        key = (kind_of(dataset), dataset, str(record.get("profile")))
        rows.setdefault(key, []).extend(record.get("rows", []))
    return {key: paired_differences(r, metric=metric) for key, r in rows.items()}


def method_order(comparisons: Sequence[Comparison],
                 paired: Sequence[PairedDifference] | None = None) -> list[OrderCheck]:
    """Check vanilla > AM > {WM, LM-perm} > LM on our means (the relations present in the rows).
    A relation is resolved when its difference exceeds twice its s.e.: the s.e. of the per-pair
    differences when `paired` is given, else the two means' s.e. combined."""
    by_method = {c.method: c for c in comparisons}
    by_relation = {(p.larger, p.smaller): p for p in paired or ()}
    checks = []
    for larger, smaller in ORDER_RELATIONS:
        if larger not in by_method or smaller not in by_method:
            continue
        big, small = by_method[larger], by_method[smaller]
        diff = big.loss_barrier - small.loss_barrier
        if (larger, smaller) in by_relation:
            resolved = by_relation[(larger, smaller)].resolved
        elif big.loss_barrier_se is not None and small.loss_barrier_se is not None:
            resolved = abs(diff) > 2 * math.hypot(big.loss_barrier_se, small.loss_barrier_se)
        else:
            resolved = None
        checks.append(OrderCheck(larger, smaller, big.loss_barrier, small.loss_barrier, big.loss_barrier_se,
                                 small.loss_barrier_se, diff > 0, resolved))
    return checks


def paper_order(column: str) -> list[OrderCheck]:
    """The same relations on the paper's own numbers for one column."""
    checks = []
    for larger, smaller in ORDER_RELATIONS:
        (m1, s1), (m2, s2) = TABLE2[larger][column], TABLE2[smaller][column]
        checks.append(OrderCheck(larger, smaller, m1, m2, s1, s2, m1 > m2, abs(m1 - m2) > 2 * math.hypot(s1, s2)))
    return checks


def order_counts(checks: Sequence[OrderCheck]) -> tuple[list[OrderCheck], list[OrderCheck], list[OrderCheck]]:
    """(hold and resolved, hold in the mean only, do not hold)."""
    return ([c for c in checks if c.holds and c.resolved], [c for c in checks if c.holds and not c.resolved],
            [c for c in checks if not c.holds])


def order_sentences(comparisons: Sequence[Comparison],
                    paired: Sequence[PairedDifference] | None = None) -> list[str]:
    """Plain sentences, generated from the numbers, on what agrees with the paper and what does
    not for one data set (all comparisons of one (kind, dataset, profile)); `paired`: the
    per-pair differences of the same rows, which then decide what is resolved."""
    if not comparisons:
        return []
    first = comparisons[0]
    where = f"{'ViT' if first.kind == 'vit' else 'GPT-2'} on {first.dataset} (profile {first.profile})"
    n = max(c.n for c in comparisons)
    checks = method_order(comparisons, paired)
    sentences = []
    if not checks:
        return [f"{where}: too few methods measured to check the order."]
    resolved, mean_only, failed = order_counts(checks)
    if len(resolved) == len(checks):
        sentences.append(f"{where}: every measured relation of the paper's order holds and is resolved "
                         f"({', '.join(c.text for c in checks)}).")
    else:
        parts = []
        if resolved:
            parts.append(f"{len(resolved)} hold and are resolved ({', '.join(c.text for c in resolved)})")
        if mean_only:
            parts.append(f"{len(mean_only)} {agree(len(mean_only), 'holds', 'hold')} in the mean but "
                         f"{agree(len(mean_only), 'is', 'are')} not resolved "
                         f"({', '.join(c.text for c in mean_only)})")
        if failed:
            parts.append(f"{len(failed)} {agree(len(failed), 'does', 'do')} not hold ("
                         + "; ".join(f"{c.text}: {c.larger_value:.3f} vs {c.smaller_value:.3f}" for c in failed)
                         + ")")
        sentences.append(f"{where}: of the {len(checks)} measured relations of the paper's order, "
                         + "; ".join(parts) + ".")
    if n < 2:
        sentences.append(f"With {n} pair there is no standard error: the order is read off single "
                         "measurements and none of it is statistically resolved.")
    else:
        sentences.append("Resolved: the difference exceeds twice its standard error"
                         + (" (of the per-pair differences)." if paired else " (the two means' errors combined)."))
    by_method = {c.method: c for c in comparisons}
    lm = by_method.get("learned_matching")
    if lm is not None:
        near = lm.loss_barrier <= ZERO_BARRIER
        sentences.append(f"Learned matching leaves a loss barrier of {lm.loss_barrier:.3f}"
                         + (" — about zero, as in the paper" if near else
                            f", not about zero (≤ {ZERO_BARRIER}) as the paper finds")
                         + (f" (paper, {COLUMNS[lm.paper_column]['label']}: {lm.paper_loss_barrier:.2f})."
                            if lm.paper_column else "."))
    perm, full = by_method.get("learned_matching_permutation"), by_method.get("learned_matching")
    if perm is not None and full is not None:
        gap = perm.loss_barrier - full.loss_barrier
        paper_gap = (TABLE2["learned_matching_permutation"][perm.paper_column][0]
                     - TABLE2["learned_matching"][perm.paper_column][0]) if perm.paper_column else None
        sentences.append(f"LM-perm − LM = {gap:.3f}: "
                         + ("restricting the residual map to a permutation leaves a higher barrier"
                            if gap > 0 else "the permutation-only ablation is not above full LM here")
                         + (f" (paper: {paper_gap:.2f})." if paper_gap is not None else "."))
    vanilla = by_method.get("vanilla")
    if vanilla is not None and vanilla.paper_loss_barrier is not None:
        ratio = vanilla.loss_barrier / vanilla.paper_loss_barrier if vanilla.paper_loss_barrier else float("nan")
        sentences.append(f"Vanilla averaging: barrier {vanilla.loss_barrier:.3f} against the paper's "
                         f"{vanilla.paper_loss_barrier:.2f} on {COLUMNS[vanilla.paper_column]['label']} "
                         f"({ratio:.2f}× the paper's).")
    return sentences


def paired_sentences(paired: Sequence[PairedDifference]) -> list[str]:
    """One sentence listing every paired difference, and what WM vs LM-perm shows."""
    if not paired:
        return []
    out = ["Paired over the same pairs (mean difference ± s.e., pairs where it is positive): "
           + "; ".join(p.text for p in paired) + "."]
    wm = next((p for p in paired if (p.larger, p.smaller) == ("weight_matching", "learned_matching_permutation")),
              None)
    if wm is not None:
        side = "WM above LM-perm" if wm.mean > 0 else "LM-perm at or above WM"
        out.append(f"WM vs LM-perm (not ordered by the paper, which finds LM-perm at or above WM in three of "
                   f"its five columns): {side} in the mean"
                   + (", resolved." if wm.resolved else ", not resolved."))
    return out


def space_and_alignment(rows: Iterable[Mapping[str, Any]], metric: str = "loss_barrier") -> list[dict[str, Any]]:
    """Each aligned method's gain over vanilla split, per pair, into the change of space (vanilla −
    canonical_unaligned: canonical instead of raw weights, nothing aligned) and the alignment
    (canonical_unaligned − method). One row per method with mean, s.e. and the pairs."""
    by_pair = barriers_by_pair(rows, metric)
    out = []
    for method in COMPARED_METHODS[2:]:
        common = [v for v in by_pair.values() if {"vanilla", CONTROL, method} <= v.keys()]
        if not common:
            continue
        row: dict[str, Any] = {"method": method, "n": len(common)}
        for part, values in (("gain", [v["vanilla"] - v[method] for v in common]),
                             ("space", [v["vanilla"] - v[CONTROL] for v in common]),
                             ("alignment", [v[CONTROL] - v[method] for v in common])):
            row[f"{part}_mean"], row[f"{part}_se"] = mean_se(values)
            row[part] = f"{row[f'{part}_mean']:+.3f}" + (f" ± {row[f'{part}_se']:.3f}"
                                                          if row[f"{part}_se"] is not None else "")
        gain = row["gain_mean"]
        row["space_share"] = row["space_mean"] / gain if gain > 0 else None
        out.append(row)
    return out


def space_sentences(parts: Sequence[Mapping[str, Any]]) -> list[str]:
    """Sentences on how much of each method's gain over vanilla is the space and how much the
    alignment, from `space_and_alignment`."""
    if not parts:
        return []
    first = parts[0]
    space, se = first["space_mean"], first["space_se"]
    out = [f"The change of space alone (canonical weights interpolated, nothing aligned) "
           f"{'lowers' if space > 0 else 'raises'} the barrier by {abs(space):.3f}"
           + (f" ± {se:.3f}" if se is not None else "")
           + ("" if se is None or abs(space) > 2 * se else ", within two standard errors of zero")
           + f" against vanilla ({first['n']} pair{'s' if first['n'] != 1 else ''}; "
           + "positive shares below are gains, negative ones losses)."]
    for p in parts:
        label = SHORT.get(p["method"], p["method"])
        if p["space_share"] is None:
            out.append(f"{label} does not lower the barrier below vanilla (gain {p['gain']}): its alignment "
                       f"adds {p['alignment']} on top of the canonical control.")
            continue
        out.append(f"{label}: of its gain {p['gain']} over vanilla, {p['space']} "
                   f"({100 * p['space_share']:.0f}%) is the space and {p['alignment']} "
                   f"({100 * (1 - p['space_share']):.0f}%) the alignment"
                   + ("" if p["alignment_mean"] > 0 else " — the alignment itself does not help beyond the space")
                   + ".")
    return out


def group_comparisons(comparisons: Sequence[Comparison]) -> dict[tuple[str, str, str], list[Comparison]]:
    """Comparisons grouped by (kind, dataset, profile), in order."""
    out: dict[tuple[str, str, str], list[Comparison]] = {}
    for c in comparisons:
        out.setdefault((c.kind, c.dataset, c.profile), []).append(c)
    return out
