"""Trainer and metrics: exact losses, seeded determinism, learning, early stopping."""

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import single_thread  # noqa: F401  (autouse fixture: one torch thread)

import lmc_study.train as train_mod
from lmc_core.metrics import evaluate, loss_and_correct
from lmc_study.profiles import get_profile
from lmc_study.train import train_model

# Tiny recipes: a few optimiser steps each, so the whole file runs in seconds on a CPU.
TINY = {
    "device": "cpu", "eval.batch_size": 256, "eval.test_images": 256, "eval.test_blocks": 16,
    "vit.patch_size": 7, "vit.embed_dim": 32, "vit.depth": 1, "vit.num_heads": 2,
    "vit.mlp_dim": 64, "vit.train_subset": 256, "vit.epochs": 2, "vit.batch_size": 64,
    "vit.warmup_epochs": 0.5,
    "gpt2.n_layer": 1, "gpt2.n_head": 2, "gpt2.n_embd": 32, "gpt2.n_inner": 64,
    "gpt2.block_size": 32, "gpt2.train_blocks": 128, "gpt2.val_blocks": 16, "gpt2.max_epochs": 2,
    "gpt2.batch_size": 32, "gpt2.warmup_steps": 2, "gpt2.dropout": 0.1, "gpt2.patience": 1,
}




def tiny(overrides: dict | None = None):
    """The smoke profile shrunk to TINY, plus ``overrides`` (dotted keys)."""
    return get_profile("smoke", {**TINY, **(overrides or {})})


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_loss_and_correct_classification_matches_manual():
    torch.manual_seed(0)
    logits, labels = torch.randn(7, 5), torch.randint(0, 5, (7,))
    loss, correct, n = loss_and_correct(logits.bfloat16(), torch.zeros(7, 3), labels)
    lp = torch.log_softmax(logits.bfloat16().float(), dim=-1)
    assert loss.dtype == torch.float32 and n == 7
    assert torch.allclose(loss, -lp[torch.arange(7), labels].sum())
    assert correct.item() == (logits.bfloat16().float().argmax(-1) == labels).sum().item()


def test_loss_and_correct_language_modelling_shifts_targets():
    torch.manual_seed(0)
    ids, logits = torch.randint(0, 11, (3, 6)), torch.randn(3, 6, 11)
    loss, correct, n = loss_and_correct(logits, ids, None)
    manual = sum(-torch.log_softmax(logits[b, t], -1)[ids[b, t + 1]]
                 for b in range(3) for t in range(5))
    hits = sum(int(logits[b, t].argmax() == ids[b, t + 1]) for b in range(3) for t in range(5))
    assert n == 15 and torch.allclose(loss, manual) and correct.item() == hits


def test_evaluate_is_a_mean_over_items_not_batches():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    x, y = torch.randn(10, 4), torch.randint(0, 3, (10,))
    uneven = [(x[:7], y[:7]), (x[7:], y[7:])]
    out = evaluate(model, uneven)
    assert math.isclose(out["loss"], F.cross_entropy(model(x), y).item(), rel_tol=1e-6)
    assert model.training  # mode restored


@pytest.mark.parametrize("kind", ["vit", "gpt2"])
def test_same_seed_same_weights_other_seed_differs(kind):
    profile = tiny()
    a = train_model(kind, profile, 0, progress=False)
    b = train_model(kind, profile, 0, progress=False)
    c = train_model(kind, profile, 1, progress=False)
    assert same_weights(a, b)
    assert not same_weights(a, c)
    assert not a.training and a.lmc_meta["epochs_run"] == 2 and not a.lmc_meta["from_cache"]


@pytest.mark.parametrize("kind", ["vit", "gpt2"])
def test_loss_goes_down(kind):
    profile = tiny({"vit.epochs": 3, "gpt2.max_epochs": 3, "gpt2.patience": 3})
    meta = train_model(kind, profile, 0, progress=False).lmc_meta
    losses = [h["train_loss"] for h in meta["history"]]
    assert losses[-1] < losses[0]
    chance = math.log(meta["build"].get("num_classes") or meta["build"]["vocab_size"])
    assert meta["test_loss"] < chance


def test_early_stopping_returns_the_best_epoch(monkeypatch):
    profile = tiny({"gpt2.max_epochs": 6, "gpt2.patience": 2})
    val = iter([3.0, 2.0, 2.5, 2.7])  # best at epoch 2, then two worse epochs: stop after 4
    real_evaluate = train_mod.evaluate

    def fake_evaluate(model, batches, **kw):
        loss = next(val, None)
        return {"loss": loss, "accuracy": 0.0} if loss is not None else real_evaluate(model, batches)

    snapshots = {}

    def snapshot(epoch, record):
        snapshots[epoch] = {k: v.clone() for k, v in model_ref[0].state_dict().items()}

    model_ref = []
    real_build = train_mod.build_model

    def build(*args, **kw):
        model_ref.append(real_build(*args, **kw))
        return model_ref[0]

    monkeypatch.setattr(train_mod, "evaluate", fake_evaluate)
    monkeypatch.setattr(train_mod, "build_model", build)
    model = train_model("gpt2", profile, 0, progress=False, on_epoch_end=snapshot)
    meta = model.lmc_meta
    assert meta["epochs_run"] == 4 and meta["best_epoch"] == 2 and meta["best_val_loss"] == 2.0
    state = model.state_dict()
    assert all(torch.equal(state[k], snapshots[2][k]) for k in state)
    assert not all(torch.equal(state[k], snapshots[4][k]) for k in state)
