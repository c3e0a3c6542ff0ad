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


def test_bigram_on_a_deterministic_sequence():
    vocab = 7
    blocks = (torch.arange(8 * 16) % vocab).view(8, 16)  # token t is always followed by t + 1 mod 7
    small = ngram(blocks, blocks, blocks, vocab, order=2, k_grid=(1e-6,))
    assert small["test_loss"] < 1e-4
    huge = ngram(blocks, blocks, blocks, vocab, order=2, k_grid=(1e12,))
    assert abs(huge["test_loss"] - math.log(vocab)) < 1e-6
    uni = ngram(blocks, blocks, blocks, vocab, order=1, k_grid=(1e-6,))
    assert abs(uni["test_loss"] - math.log(vocab)) < 0.01  # every token about equally frequent


def test_chosen_k_minimises_validation_loss():
    gen = torch.Generator().manual_seed(1)
    train = torch.randint(0, 20, (30, 12), generator=gen)
    val = torch.randint(0, 20, (10, 12), generator=gen)
    out = ngram(train, val, val, 20, order=2, k_grid=(1e-3, 0.1, 1.0, 10.0))
    assert out["val_losses"][out["grid"].index(out["chosen"])] == min(out["val_losses"])
    assert out["test_loss"] == min(out["val_losses"])  # test = val here
    assert len(set(out["val_losses"])) == 4
