"""Chapter 09's curves against lines (lmc_study.curve_study): paired differences with t intervals
and Holm, the verdicts' words, and every path of one pair measured end to end on tiny ViTs."""

from __future__ import annotations

import pytest
import torch
from helpers import single_thread  # noqa: F401  (autouse fixture)

from lmc_study.curve_study import (
    CURVE_METHODS,
    EQUIVALENCE_NATS,
    curve_comparisons,
    curve_verdicts,
    curves_vs_lines,
    paired_difference,
)
from lmc_study.profiles import get_profile


def rows_of(values: dict[str, list[float]], prep: dict[str, float]) -> list[dict]:
    return [{"method": m, "models": [2 * i, 2 * i + 1], "loss_barrier": v, "prep_s": prep[m]}
            for m, vs in values.items() for i, v in enumerate(vs)]


def test_paired_difference_intervals_holm_and_verdicts():
    rows = rows_of({"curve": [0.1, 0.2, 0.6], "canonical_line": [0.5, 0.5, 0.5], "learned_matching": [0.2, 0.2, 0.2],
                    "aligned_curve": [0.1, 0.11, 0.12], "aligned_weight_curve": [0.101, 0.111, 0.119]},
                   {"curve": 10.0, "canonical_line": 0.0, "learned_matching": 2.0, "aligned_curve": 12.0,
                    "aligned_weight_curve": 14.0})
    d = paired_difference(rows, "curve", "canonical_line")
    assert d["mean_diff"] == pytest.approx(-0.2) and d["n"] == 3 and d["n_lower"] == 2
    assert d["values"] == pytest.approx([-0.4, -0.3, 0.1]) and d["median"] == pytest.approx(-0.3)
    assert d["lo"] < -0.2 < d["hi"] and d["hi"] > 0  # t with 2 df: wide enough to include 0
    found = {(c["method"], c["baseline"]): c for c in curve_comparisons(rows)}
    assert list(found) == [("curve", "canonical_line"), ("aligned_curve", "aligned_weight_curve"),
                           ("aligned_weight_curve", "learned_matching"), ("aligned_curve", "learned_matching")]
    assert found["curve", "canonical_line"]["verdict"] == "cannot tell"
    assert found["aligned_curve", "aligned_weight_curve"]["verdict"] == "no difference"
    assert found["aligned_curve", "learned_matching"]["verdict"] == "lower"  # −0.09 ± 0.006: resolved after Holm
    assert all(c["p_holm"] >= c["p"] for c in found.values())
    first, second, _, third = curve_verdicts(rows)
    assert first.startswith("Canonical curve, unaligned vs canonical line, unaligned: loss barrier -0.200 [")
    assert "(per pair -0.400, -0.300, +0.100): cannot tell which is lower; lower on 2 of 3 pair(s)" in first
    assert "after Holm" not in first  # its interval includes 0 anyway
    assert "10.0 s against 0.0 s." in first
    assert f"no different (within ±{EQUIVALENCE_NATS})" in second and ": lower;" in third
    with pytest.raises(ValueError, match="no pair has both"):
        paired_difference(rows, "curve", "weight_matching")


def test_a_difference_resolved_only_before_holm_says_so():
    rows = rows_of({"curve": [0.1, 0.35, 0.2], "canonical_line": [0.6, 0.6, 0.6], "learned_matching": [0.2, 0.3, 0.1],
                    "aligned_curve": [0.1, 0.2, 0.3]}, {"curve": 1.0, "canonical_line": 0.0, "learned_matching": 1.0,
                                                        "aligned_curve": 1.0})
    (d, _), (first, _) = curve_comparisons(rows), curve_verdicts(rows)
    assert d["hi"] < 0 and d["p"] < 0.05 < d["p_holm"] and d["verdict"] == "cannot tell"
    assert "cannot tell which is lower after Holm across the 2 comparisons (the unadjusted interval excludes 0)" in first


def test_every_path_of_one_pair_end_to_end(tmp_path, monkeypatch):
    """Tiny ViTs: nine paths per pair, each ending at the two models' own losses; the
    weight-space curves are ViT-class curves (space recorded), the aligned ones start from the
    exported aligned B, and training a curve lowers its barrier below its own starting line's."""
    monkeypatch.setenv("LMC_CACHE_DIR", str(tmp_path))
    profile = get_profile("smoke", {"vit.train_subset": 96, "vit.epochs": 1, "vit.batch_size": 16,
                                    "vit.embed_dim": 16, "vit.num_heads": 2, "vit.mlp_dim": 32, "vit.depth": 1,
                                    "eval.test_images": 64, "align.lm_batch_size": 16, "align.lm_epochs": 1,
                                    "align.lm_steps_per_epoch": 3, "experiment.n_pairs": 1, "experiment.lambdas": 3,
                                    "curves.steps": 40, "curves.lr": 0.01})
    rows = curves_vs_lines("vit", profile, torch.device("cpu"))
    by = {r["method"]: r for r in rows}
    assert [r["method"] for r in rows] == list(CURVE_METHODS)
    for r in rows:
        assert r["loss_a"] == pytest.approx(by["vanilla"]["loss_a"], abs=1e-4), r["method"]
        assert r["loss_b"] == pytest.approx(by["vanilla"]["loss_b"], abs=1e-4), r["method"]
    assert by["weight_curve"]["space"] == "weights" and by["curve"]["space"] == "canonical"
    assert by["aligned_weight_curve"]["align_method"] == "weight_matching"
    assert by["weight_curve"]["loss_barrier"] < by["vanilla"]["loss_barrier"]
    assert by["curve"]["loss_barrier"] < by["canonical_line"]["loss_barrier"]
    assert by["aligned_weight_curve"]["loss_barrier"] < by["weight_line_aligned"]["loss_barrier"]
