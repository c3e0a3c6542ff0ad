"""Paired comparisons between methods, the canonical control's share and the order's wording."""

import math

import pytest

from lmc_study import book, table2

# loss barriers per pair: WM − LM = 0.1, 0.2, 0.3 (resolved); AM − WM = +0.5, −0.1, +0.2 (not)
BARRIERS = {
    (0, 1): {"vanilla": 2.0, "canonical_unaligned": 1.5, "activation_matching": 1.0, "weight_matching": 0.5,
             "learned_matching_permutation": 0.6, "learned_matching": 0.4},
    (2, 3): {"vanilla": 2.2, "canonical_unaligned": 1.2, "activation_matching": 0.7, "weight_matching": 0.8,
             "learned_matching_permutation": 0.7, "learned_matching": 0.6},
    (4, 5): {"vanilla": 1.8, "canonical_unaligned": 1.4, "activation_matching": 0.9, "weight_matching": 0.7,
             "learned_matching_permutation": 0.65, "learned_matching": 0.4},
}
ROWS = [{"method": m, "models": list(pair), "loss_barrier": v} for pair, d in BARRIERS.items() for m, v in d.items()]
RECORD = {"notebook": "03_vit_pairwise", "datasets": ["fashion_mnist"], "profile": "smoke", "rows": ROWS}


def test_paired_differences_are_per_pair():
    found = {(p.larger, p.smaller): p for p in table2.paired_differences(ROWS)}
    wm_lm = found[("weight_matching", "learned_matching")]
    assert wm_lm.differences == pytest.approx([0.1, 0.2, 0.3])
    assert wm_lm.mean == pytest.approx(0.2) and wm_lm.se == pytest.approx(0.1 / math.sqrt(3))
    assert wm_lm.positive == 3 and wm_lm.resolved is True
    assert wm_lm.text == "WM − LM: +0.200 ± 0.058, 3/3 pairs"
    am_wm = found[("activation_matching", "weight_matching")]
    assert am_wm.positive == 2 and am_wm.resolved is False
    assert ("weight_matching", "learned_matching_permutation") in found  # not in the paper's order, still compared


def test_paired_by_setting_compares_each_setting_with_the_reference_on_the_same_pairs():
    rows = [{"method": "learned_matching", "models": list(pair), "lambda_sampler": sampler, "loss_barrier": value}
            for pair, values in {(0, 1): (0.10, 0.30, 0.2), (2, 3): (0.20, 0.25, 0.1), (4, 5): (0.15, 0.45, None)}.items()
            for sampler, value in zip(("uniform_0.4_0.6", "uniform_0_1", "fixed_0.5"), values, strict=True)]
    found = {p.larger: p for p in table2.paired_by_setting(rows, "lambda_sampler", "uniform_0.4_0.6")}
    assert list(found) == ["uniform_0_1", "fixed_0.5"]
    assert found["uniform_0_1"].differences == pytest.approx([0.20, 0.05, 0.30])
    assert found["uniform_0_1"].positive == 3 and found["uniform_0_1"].smaller == "uniform_0.4_0.6"
    assert found["fixed_0.5"].differences == pytest.approx([0.10, -0.10])  # pair (4, 5) lacks it: left out
    assert ROWS and table2.paired_by_setting(ROWS, "lambda_sampler", "uniform_0.4_0.6") == []


def test_wm_iteration_sentence_explains_a_rising_barrier():
    histories = {
        "orthogonal": {"iteration": [0, 1, 2, 3], "loss_barrier": [0.60, 0.15, 0.14, 0.16],
                       "weight_distance": [1.2, 0.9, 0.85, 0.84]},
        "permutation": {"iteration": [0, 1, 2, 3], "loss_barrier": [0.60, 0.40, 0.38, 0.38],
                        "weight_distance": [1.2, 1.1, 1.05, 1.05]},
    }
    text = table2.wm_iteration_sentence(histories)
    assert "0.600 at iteration 0 (nothing aligned)" in text and "lowest 0.140 at iteration 2" in text
    assert "rises by 0.020 after iteration 2 while the weight distance keeps falling" in text
    assert text.count("rises") == 1  # the permutation residual's 0.38 -> 0.38 is flat
    assert "ends below the permutation residual (0.160 vs 0.380): as the paper" in text
    histories["orthogonal"]["loss_barrier"][-1] = 0.50  # the orthogonal residual ends higher
    assert "ends at or above the permutation residual (0.500 vs 0.380): unlike the paper" in \
        table2.wm_iteration_sentence(histories)


def test_sampler_sentence_reports_paired_differences_and_the_papers_claim():
    by = [{"lambda_sampler": "uniform_0.4_0.6", "mean": 0.10, "loss_barrier": "0.100 ± 0.010"},
          {"lambda_sampler": "uniform_0_1", "mean": 0.30, "loss_barrier": "0.300 ± 0.020"}]
    wide = table2.PairedDifference("uniform_0_1", "uniform_0.4_0.6", [0.19, 0.2, 0.21], 0.2, 0.006, 3)
    text = table2.sampler_sentence(by, [wide], "uniform_0.4_0.6")
    assert "Lowest mean barrier: uniform_0.4_0.6" in text and "+0.2000 ± 0.0060, 3/3 pairs above (resolved)" in text
    assert "these runs agree" in text
    unresolved = table2.PairedDifference("uniform_0_1", "uniform_0.4_0.6", [0.3, -0.1, 0.1], 0.1, 0.115, 2)
    assert "do not show it (in the mean only)" in table2.sampler_sentence(by, [unresolved], "uniform_0.4_0.6")


def test_order_sentence_never_says_holds_for_an_unresolved_relation():
    group = table2.compare_table2([RECORD])
    paired = table2.paired_differences(ROWS)
    first = table2.order_sentences(group, paired)[0]
    assert "every measured relation" not in first
    assert "hold in the mean but are not resolved" in first and "AM > WM" in first.split("not resolved")[1]
    verdict = book.verdict_sentences(group, "smoke", table2.paired_by_group([RECORD]))[0]
    assert "in the mean" in verdict and "agrees with the paper in the mean" in verdict


def test_order_sentences_say_whether_learned_matching_is_about_zero():
    far = table2.order_sentences(table2.compare_table2([RECORD]), table2.paired_differences(ROWS))
    assert any("not about zero (≤ 0.05) as the paper finds" in s for s in far)
    near_rows = [{**r, "loss_barrier": 0.01 + 0.01 * r["models"][0] / 2} if r["method"] == "learned_matching" else r
                 for r in ROWS]  # 0.01, 0.02, 0.03
    near = table2.order_sentences(table2.compare_table2([{**RECORD, "rows": near_rows}]),
                                  table2.paired_differences(near_rows))
    lm = next(s for s in near if s.startswith("Learned matching leaves"))
    assert "about zero, as in the paper" in lm and "not about zero" not in lm


def test_space_and_alignment_add_up_to_the_gain():
    parts = {p["method"]: p for p in table2.space_and_alignment(ROWS)}
    assert set(parts) == {"activation_matching", "weight_matching", "learned_matching_permutation",
                          "learned_matching"}
    wm = parts["weight_matching"]
    assert wm["space_mean"] == pytest.approx((0.5 + 1.0 + 0.4) / 3)
    assert wm["space_mean"] + wm["alignment_mean"] == pytest.approx(wm["gain_mean"])
    assert wm["space_share"] == pytest.approx(wm["space_mean"] / wm["gain_mean"])
    assert "the space" in table2.space_sentences(list(parts.values()))[1]


def test_control_is_compared_without_a_paper_number():
    control = [c for c in table2.compare_table2([RECORD]) if c.method == "canonical_unaligned"]
    assert len(control) == 1 and control[0].paper_loss_barrier is None
    assert control[0].loss_barrier == pytest.approx((1.5 + 1.2 + 1.4) / 3)


def test_profile_sentence_never_calls_small_models_the_papers_recipes():
    for name in ("smoke", "cpu"):
        text = book.profile_sentence(name)
        assert f"**{name}**" in text and "recipes as written" not in text and "not" in text
    assert "recipes as written" in book.profile_sentence("paper")
