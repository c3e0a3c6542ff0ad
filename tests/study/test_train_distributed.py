"""Training under torchrun: two gloo processes on the CPU follow one process's trajectory.

Each process trains on its slice of every batch (a batch of 63 images is split 31 / 32) and the
gradients are averaged, so the weights must agree up to the order of floating-point sums.
"""

from __future__ import annotations

import torch
from helpers import max_dev, run_on_gloo, single_thread  # noqa: F401

from lmc_core import distributed
from lmc_study.profiles import get_profile
from lmc_study.train import train_model

TINY_VIT = {  # four optimiser steps of a small ViT on 256 Fashion-MNIST images, no dropout
    "device": "cpu", "eval.batch_size": 256, "eval.test_images": 256, "vit.patch_size": 7, "vit.embed_dim": 32,
    "vit.depth": 1, "vit.num_heads": 2, "vit.mlp_dim": 64, "vit.train_subset": 256, "vit.epochs": 1,
    "vit.batch_size": 63, "vit.warmup_epochs": 0.5,
}


def _train() -> dict:
    torch.set_num_threads(1)
    trained = train_model("vit", get_profile("smoke", TINY_VIT), seed=0, progress=False)
    return {"state": trained.state_dict(), "train_loss": trained.lmc_meta["history"][0]["train_loss"]}


def test_two_processes_train_as_one(tmp_path):
    two = run_on_gloo(_train, tmp_path)
    one = _train()
    assert not distributed.active()
    assert max(max_dev(one["state"][k], two["state"][k]) for k in one["state"]) < 1e-4
    assert abs(one["train_loss"] - two["train_loss"]) < 1e-5
