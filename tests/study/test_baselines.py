"""Trivial baselines: logistic regression and add-k n-gram models on planted data."""

import math

import torch

from lmc_study.baselines import logistic_regression, ngram


def test_logistic_regression_separates_planted_classes():
    gen = torch.Generator().manual_seed(0)
    centres = 6 * torch.randn(4, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 4, (400,), generator=gen)
    x = centres[y] + 0.3 * torch.randn(400, 5, generator=gen, dtype=torch.float64)
    out = logistic_regression(x[:270], y[:270], x[270:300], y[270:300], x[300:], y[300:], 4,
                              l2_grid=(0.0, 1e-2, 1.0))
    assert out["test_accuracy"] > 0.99
    assert out["test_loss"] < 0.1 * math.log(4)
    assert out["chosen"] == out["grid"][min(range(3), key=out["val_losses"].__getitem__)]
    assert out["val_rows"] == 30 and out["train_rows"] == 270


def test_l2_is_chosen_on_validation_and_scored_on_test():
    """Clean validation labels favour the weakest penalty, test labels flipped at random favour
    the strongest: the model keeps validation's choice, and swapping the splits changes it."""
    gen = torch.Generator().manual_seed(2)
    centres = 3 * torch.randn(3, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (600,), generator=gen)
    x = centres[y] + torch.randn(600, 4, generator=gen, dtype=torch.float64)
    noisy = torch.where(torch.rand(600, generator=gen) < 0.6, torch.randint(0, 3, (600,), generator=gen), y)
    grid = (0.0, 10.0)
    split = (x[:300], y[:300], x[300:450], y[300:450], x[450:], noisy[450:])
    out = logistic_regression(*split, 3, l2_grid=grid)
    assert out["chosen"] == 0.0
    strong = logistic_regression(*split, 3, l2_grid=(10.0,))
    assert out["test_loss"] > strong["test_loss"]  # test would have chosen otherwise
    swapped = logistic_regression(x[:300], y[:300], x[450:], noisy[450:], x[300:450], y[300:450], 3, l2_grid=grid)
    assert swapped["chosen"] == 10.0


def test_bigram_on_a_deterministic_sequence():
    vocab = 7
    blocks = (torch.arange(8 * 16) % vocab).view(8, 16)  # token t is always followed by t + 1 mod 7
    small = ngram(blocks, blocks, blocks, vocab, order=2, k_grid=(1e-6,))
    assert small["test_loss"] < 1e-4
    huge = ngram(blocks, blocks, blocks, vocab, order=2, k_grid=(1e12,))
    assert abs(huge["test_loss"] - math.log(vocab)) < 1e-6
    uni = ngram(blocks, blocks, blocks, vocab, order=1, k_grid=(1e-6,))
    assert abs(uni["test_loss"] - math.log(vocab)) < 0.01  # every token about equally frequent


def test_k_is_chosen_on_validation_and_scored_on_test():
    """Validation follows the training sequence (a small k fits it), test is noise (a large k
    does): the chosen k is validation's, its test loss is reported as it is, and swapping the
    two splits changes the choice, so a baseline that read test to choose would fail here."""
    vocab, grid = 7, (1e-3, 0.1, 1.0, 100.0)
    train = (torch.arange(20 * 16) % vocab).view(20, 16)
    val = (torch.arange(5 * 16) % vocab).view(5, 16)
    noise = torch.randint(0, vocab, (5, 16), generator=torch.Generator().manual_seed(1))
    out = ngram(train, val, noise, vocab, order=2, k_grid=grid)
    assert out["chosen"] == 1e-3 and out["val_losses"].index(min(out["val_losses"])) == 0
    (at_chosen,) = ngram(train, noise, noise, vocab, order=2, k_grid=(1e-3,))["val_losses"]
    assert out["test_loss"] == at_chosen
    assert out["test_loss"] > min(ngram(train, noise, noise, vocab, order=2, k_grid=grid)["val_losses"]) + 1.0
    assert ngram(train, noise, val, vocab, order=2, k_grid=grid)["chosen"] == 100.0  # swapped: another k


def test_baselines_take_validation_and_test_from_the_profiles_splits():
    """The wiring: the rows chosen on are the profile's validation split, the rows scored the test
    subset (their sizes differ on purpose, so a swap would show), and with_test=False reads none."""
    from lmc_study.baselines import baselines
    from lmc_study.profiles import get_profile

    profile = get_profile("smoke", {"vit.train_subset": 300, "vit.val_images": 200, "eval.test_images": 120,
                                    "gpt2.val_blocks": 6, "eval.test_blocks": 10})
    (lr,) = baselines("vit", profile)
    assert (lr["val_rows"], lr["test_rows"], lr["train_rows"]) == (200, 120, 300)
    uni, bi = baselines("gpt2", profile)
    assert uni["val_rows"] == bi["val_rows"] == 6 and bi["test_rows"] == 10  # blocks
    (lr_val,) = baselines("vit", profile, with_test=False)
    assert lr_val["test_rows"] == 0 and lr_val["test_loss"] is None and lr_val["val_losses"] == lr["val_losses"]
