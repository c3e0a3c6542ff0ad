"""Statistics over model pairs: means with standard errors, paired t intervals, Holm."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def mean_se(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and standard error (sample std / sqrt(n)); the error is None for n < 2."""
    n = len(values)
    if n == 0:
        raise ValueError("mean of no values")
    mean = sum(values) / n
    if n < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def format_mean_se(mean: float | None, se: float | None, digits: int = 2) -> str:
    if mean is None:
        return "—"
    return f"{mean:.{digits}f}" + (f" ± {se:.{digits}f}" if se is not None else "")


def paired_interval(diffs: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """Mean of paired differences with its t interval (n − 1 degrees of freedom), the two-sided
    p-value of a zero mean, the median, the values themselves and how many are below zero.
    With one pair there is no interval (lo, hi and p are None)."""
    from scipy import stats  # scipy costs ~0.3 s to import: only callers of this pay it

    n = len(diffs)
    mean, se = mean_se(diffs)
    out: dict[str, Any] = {"n": n, "mean_diff": mean, "se": se, "median": float(np.median(diffs)),
                           "values": [float(d) for d in diffs], "n_lower": sum(d < 0 for d in diffs),
                           "lo": None, "hi": None, "p": None}
    if se is not None:
        half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * se
        out["lo"], out["hi"] = mean - half, mean + half
        out["p"] = 1.0 if se == 0 and mean == 0 else (
            0.0 if se == 0 else float(2 * stats.t.sf(abs(mean) / se, n - 1)))
    return out


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of the p-values of one family (None stays None)."""
    known = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(known):
        running = max(running, min(1.0, (len(known) - rank) * p))
        out[i] = running
    return out


def relation(d: Mapping[str, Any], margin: float) -> str:
    """A paired difference in words: 'no difference' when its 95% interval lies within ±margin,
    'higher'/'lower' when its Holm-adjusted p-value (``p_holm``) is below 0.05, else 'cannot tell'."""
    if d["lo"] is None:
        return "cannot tell (n = 1)"
    if -margin < d["lo"] and d["hi"] < margin:
        return "no difference"
    if d.get("p_holm", d["p"]) < 0.05:
        return "higher" if d["mean_diff"] > 0 else "lower"
    return "cannot tell"
