"""Chapter 09's statistics over pairs (lmc_study.curve_study): paired differences and verdicts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lmc_study.curve_study import curve_comparisons, curve_verdicts, paired_difference


def rows_of(values: dict[str, list[float]], prep: dict[str, float]) -> list[dict]:
    return [{"method": m, "models": [2 * i, 2 * i + 1], "loss_barrier": v, "prep_s": prep[m]}
            for m, vs in values.items() for i, v in enumerate(vs)]


def test_paired_difference_and_verdicts():
    rows = rows_of({"curve": [0.1, 0.2, 0.6], "canonical_line": [0.5, 0.5, 0.5], "learned_matching": [0.2, 0.2, 0.2]},
                   {"curve": 10.0, "canonical_line": 0.0, "learned_matching": 2.0})
    d = paired_difference(rows, "curve", "canonical_line")
    assert d["mean"] == pytest.approx(-0.2) and d["n"] == 3 and (d["lower"], d["higher"]) == (2, 1)
    assert d["se"] == pytest.approx(np.std([-0.4, -0.3, 0.1], ddof=1) / math.sqrt(3))
    assert [(c["method"], c["baseline"]) for c in curve_comparisons(rows)] == [("curve", "canonical_line"),
                                                                              ("curve", "learned_matching")]
    first, second = curve_verdicts(rows)
    assert first.startswith("Curve, unaligned vs canonical line, unaligned: loss barrier lower by 0.200 ± 0.153 nats")
    assert "within two standard errors" in first and "lower on 2 of 3 pair(s)" in first and "10.0 s against 0.0 s." in first
    assert "higher by 0.100" in second and "(5.0×)" in second
    with pytest.raises(ValueError, match="no pair has both"):
        paired_difference(rows, "curve", "weight_matching")
