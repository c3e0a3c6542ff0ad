"""The study's alignment settings: the canonical_unaligned control (the canonical forms of the two raw models,
nothing aligned) and the options a profile gives `align`."""

import torch
from helpers import make_vit, randomize_, raw_logits, vit_images

from lmc_core.adapters import canonicalize
from lmc_core.metrics import model_logits
from lmc_study import experiments
from lmc_study.profiles import get_profile


def test_canonical_unaligned_keeps_both_functions_and_aligns_nothing():
    a = randomize_(make_vit(dtype=torch.float64), seed=0)
    b = randomize_(make_vit(dtype=torch.float64), seed=1)
    found = experiments.align_by_name("canonical_unaligned", a, b, get_profile("smoke"), data=None)
    sym = found.symmetry
    assert sym.residual is None and sym.heads is None and sym.mlp is None  # the identity
    x = vit_images(a)
    with torch.no_grad():
        for raw, canon in ((a, found.model_a), (b, found.model_b)):
            assert (model_logits(canon, x) - raw_logits(raw, x)).abs().max() < 1e-9
    # B is not moved towards A: its canonical weights are exactly B's own canonical form
    own = canonicalize(b).params()
    assert all(torch.equal(v, own[k]) for k, v in found.model_b.params().items())
    assert "canonical_unaligned" in experiments.PAIRWISE_METHODS


def test_reassignment_sentence_says_when_zero_change_is_forced_by_the_budget():
    none, some = {"heads": 0.0, "mlp": 0.0}, {"heads": 0.25, "mlp": 0.05}
    text = experiments.reassignment_sentence(none, some, lr=1e-3, perm_lr=0.1, steps=200)
    assert "fewer than 1/(2·lr) = 500, none could move" in text
    assert "25.0% of heads and 5.0% of MLP units" in text and "do move when they can" in text
    free = experiments.reassignment_sentence(none, {"heads": 0.0, "mlp": 0.02}, lr=1e-2, perm_lr=0.1, steps=200)
    assert "none could move" not in free and "barely change even where they can" in free
    moved_anyway = experiments.reassignment_sentence(some, some, lr=1e-3, perm_lr=0.1, steps=200)
    assert "none could move" not in moved_anyway  # the numbers, not the step count, decide
    short = experiments.reassignment_sentence(none, none, lr=1e-3, perm_lr=0.1, steps=3)
    assert "too few steps for any to move there either" in short and "paper finds" not in short


def test_align_options_leave_a_recipes_settings_to_it() -> None:
    profile = get_profile("smoke")
    assert experiments.align_options(profile)["lr"] == profile.align.lm_lr
    official = experiments.align_options(profile, recipe="official")
    assert "lr" not in official and official["iterations"] == profile.align.wm_iterations
    assert experiments.align_options(profile, recipe="official", lr=0.5)["lr"] == 0.5  # explicit still wins
