"""The generated checks of the paper's figures: each says agree or disagree from the numbers given."""

from __future__ import annotations

import pytest

from lmc_study import checks
from lmc_study.profiles import get_profile

LAMBDAS = [0.0, 0.25, 0.5, 0.75, 1.0]


def _row(method: str, pair: int, barrier: float, **extra) -> dict:
    losses = [1.0, 1.0 + barrier / 2, 1.0 + barrier, 1.0 + barrier / 2, 1.0]
    return {"method": method, "models": [2 * pair, 2 * pair + 1], "loss_barrier": barrier, "lambdas": LAMBDAS,
            "losses": losses, "loss_b": 1.0, **extra}


def _path_rows(vanilla: float, wm: float, lm: float) -> list[dict]:
    return [_row(m, p, b + 0.01 * p) for p in range(3)
            for m, b in (("vanilla", vanilla), ("weight_matching", wm), ("learned_matching", lm))]


def test_path_sentence_agrees_only_when_wm_removes_most_and_lm_is_flat() -> None:
    agree = checks.path_sentence(_path_rows(2.0, 0.3, 0.01), "Fig. 3a")
    assert "3 pairs" in agree and "peaks at λ = 0.5 on every pair" in agree
    assert "over half on every pair, as in the paper" in agree
    assert "about zero (≤ 0.05 nats) on every pair, as in the paper" in agree
    disagree = checks.path_sentence(_path_rows(1.0, 0.8, 0.2), "Fig. 3b")
    assert "not over half on every pair, unlike the paper" in disagree and "not flat, unlike the paper" in disagree
    # one pair failing is enough: the mean alone would pass
    mixed = _path_rows(2.0, 0.3, 0.01)
    mixed[-1]["loss_barrier"] = 0.2
    assert "not flat, unlike the paper" in checks.path_sentence(mixed, "Fig. 3a")
    assert "no check" in checks.path_sentence([_row("vanilla", 0, 1.0)], "Fig. 3a")


def test_width_sentences_check_order_zero_and_exactness() -> None:
    rows = [{"method": m, "width_b": w, "loss_barrier": b, "loss_b": 2.0, "loss_b_unlifted": 2.0 + 1e-7}
            for w, bs in ((64, (1.0, 0.3, 0.02)), (32, (1.0, 0.2, 0.4)))
            for m, b in zip(("lift_only", "weight_matching", "learned_matching"), bs, strict=True)]
    out = checks.width_sentences(rows, "Residual width only")
    assert "exact to rounding" in out[0]
    broken = [{**r, "loss_b_unlifted": 2.01} for r in rows]  # a lift that changed the function
    assert "by at most 1.00e-02 — NOT exact" in checks.width_sentences(broken, "Residual width only")[0]
    assert "the paper's order lift ≥ WM ≥ LM, and LM is about zero" in out[1]
    assert "not the paper's order" in out[2] and "LM is not about zero" in out[2]


def test_simplex_sentence() -> None:
    flat = {"vanilla": {"deviation": [0, 2.0, 1.0]}, "weight_matching": {"deviation": [0, 0.5, 0.2]},
            "learned_matching": {"deviation": [0, 0.03, 0.01]}}
    assert "Each method lowers both" in checks.simplex_sentence(flat)
    assert "flat, as in the paper" in checks.simplex_sentence(flat)
    bumpy = {**flat, "learned_matching": {"deviation": [0, 0.6, 0.3]}}
    out = checks.simplex_sentence(bumpy)
    assert "do not lower both" in out and "lower, not flat" in out


def test_rotation_sentence() -> None:
    near = {"O_WM": [80.0, 90.0, 95.0], "random O": [85.0, 90.0, 92.0], "O_LM O_WMᵀ": [1.0, 3.0, 20.0]}
    out = checks.rotation_sentence(near)
    assert "as large as a random rotation" in out and "only nudges it: as in the paper" in out
    assert "67% of its angles below 10°" in out
    far = {**near, "O_WM": [5.0, 10.0, 12.0], "O_LM O_WMᵀ": [30.0, 40.0, 50.0]}
    out = checks.rotation_sentence(far)
    assert "not like a random rotation" in out and "unlike the paper" in out


def test_lm_init_sentence() -> None:
    fast = {"weight_matching": {"epoch": [0, 1, 2, 3], "test_barrier": [0.2, 0.04, 0.03, 0.02]},
            "identity": {"epoch": [0, 1, 2, 3], "test_barrier": [1.0, 0.5, 0.3, 0.2]}}
    out = checks.lm_init_sentence(fast)
    assert "about zero (≤ 0.05 nats) by epoch 2, as in the paper" in out and "a barrier remains" in out
    assert "3 epochs long, not 15" in out
    slow = {"weight_matching": {"epoch": [0, 1, 2], "test_barrier": [0.2, 0.1, 0.09]},
            "identity": {"epoch": [0, 1, 2], "test_barrier": [1.0, 0.1, 0.04]}}
    out = checks.lm_init_sentence(slow)
    assert "not about zero (≤ 0.05 nats) by epoch 2" in out and "no larger barrier remains" in out
    one = {k: {"epoch": v["epoch"][:2], "test_barrier": v["test_barrier"][:2]} for k, v in slow.items()}
    assert "by epoch 1" in checks.lm_init_sentence(one) and "1 epoch long" in checks.lm_init_sentence(one)


def test_soft_sentence_separates_a_lower_middle_from_a_changed_endpoint() -> None:
    hard = _row("learned_matching", 0, 0.10, lambda_sampler="uniform_0.4_0.6")
    soft = {**_row("soft", 0, 0.08, lambda_sampler="uniform_0.4_0.6"), "loss_b": 1.05}
    soft["losses"] = [1.05, 1.1, 1.11, 1.05, 1.0]  # middle 1.11 > hard's 1.10; barrier lower from the end
    out = checks.soft_sentence([hard, soft, {**hard, "perm_lr": 0.1}], original_loss_b=1.0)
    assert "+5.00e-02 nats (not exact, as in the paper)" in out
    assert "not lower, unlike the paper" in out and "comes from its changed endpoint" in out
    soft["losses"][2] = 1.05
    assert "lower, as in the paper" in checks.soft_sentence([hard, soft], original_loss_b=1.0)
    exact = {**soft, "loss_b": 1.0 + 1e-6}  # a soft run that kept B's function: not what the paper saw
    assert "+1.00e-06 nats (exact: unlike the paper)" in checks.soft_sentence([hard, exact], original_loss_b=1.0)


def test_table3_sentence_lists_what_differs() -> None:
    out = checks.table3_sentence("vit", get_profile("cpu"))
    assert out.startswith("Table 3, ViT: the cpu profile's recipe differs") and "epochs" in out


def test_recipe_sentences_pair_recipes_and_components() -> None:
    rows = []
    for pair, (ours, official) in enumerate(((0.10, 0.20), (0.12, 0.25), (0.08, 0.15))):
        rows += [_row("learned_matching", pair, ours, recipe="ours"),
                 _row("learned_matching", pair, official, recipe="official")]
    rows += [_row("learned_matching", 0, 0.18, recipe="ours + optimiser"),
             _row("learned_matching", 0, 0.09, recipe="ours + dropout")]
    out = checks.recipe_sentences(rows)
    assert out[0].startswith("LM, the authors' recipe minus ours: +0.100 ± 0.")
    assert "positive on 3 of 3 pairs; resolved" in out[0] and "higher on every pair" in out[0]
    assert "optimiser +0.080; dropout -0.010" in out[1] and "largest change on this pair comes from optimiser" in out[1]
    quiet = [r for r in rows if r["recipe"] in ("ours", "official")] + [
        _row("learned_matching", 0, 0.101, recipe="ours + dropout")]
    assert "None moves the barrier by 0.005 nats or more on this pair" in checks.recipe_sentences(quiet)[1]
    mixed = []
    for pair, (ours, official) in enumerate(((0.10, 0.20), (0.12, 0.05), (0.08, 0.10))):
        mixed += [_row("learned_matching", pair, ours, recipe="ours"),
                  _row("learned_matching", pair, official, recipe="official")]
    first = checks.recipe_sentences(mixed)[0]
    assert "positive on 2 of 3 pairs; not resolved" in first and "higher on every pair" not in first


@pytest.mark.parametrize("kind", ["vit", "gpt2"])
def test_table3_sentence_names_the_settings_that_differ(kind: str) -> None:
    """The small profiles change the architecture, the paper-scale ones keep it; every profile
    trains on other data (Fashion-MNIST / the Shakespeare plays) on other hardware."""
    for name in ("smoke", "cpu", "full", "paper"):
        text = checks.table3_sentence(kind, get_profile(name))
        differ = text.split("(")[1].split(")")[0].split(", ")
        assert {"data", "hardware"} <= set(differ), (name, text)
        assert ("layers / heads / width / MLP" in differ) == (name in ("smoke", "cpu")), (name, text)
        assert f"in {len(differ)} of 12 settings" in text
    paper_gpt2 = checks.table3_sentence("gpt2", get_profile("paper"))
    assert kind == "vit" or "(data, epochs, schedule, hardware)" in paper_gpt2


def test_symmetry_sentences() -> None:
    labels = {"canonical_form": "canonical", "permutation": "perm", "invertible": "inv"}
    rows = [{"kind": "vit", "method": "canonical_form", "logit_deviation": 1e-6, "logit_scale": 10.0,
             "weight_distance": 0.0, "loss_barrier": 0.0},
            {"kind": "vit", "method": "permutation", "logit_deviation": 2e-6, "logit_scale": 10.0,
             "weight_distance": 1.2, "loss_barrier": 0.4},
            {"kind": "vit", "method": "invertible", "logit_deviation": 1e-6, "logit_scale": 10.0,
             "weight_distance": 1e-8, "raw_weight_distance": 0.7, "loss_barrier": 0.0,
             "vanilla_loss_barrier": 0.3}]
    (out,) = checks.symmetry_sentences(rows, labels)
    assert "2.0e-07 (perm): every class keeps the function" in out and "1 of 3 classes moves" in out
    assert "the canonical form absorbs it" in out and "above 0.05 nats for 1 class (perm)" in out
    assert "flat to 1e-6 for canonical, inv" in out and "climbs 0.300 nats" in out
    rows[1]["logit_deviation"] = 1.0
    assert "NOT at float32 rounding" in checks.symmetry_sentences(rows, labels)[0]
