"""Two gloo processes on the CPU against one: same gradients, same learned matching, same training.

Each process takes its slice of every batch (`lmc_core.distributed.shard`, uneven slices
included) and the gradients are averaged over the processes, so two processes must follow the
single process's trajectory up to the order of floating-point sums.
"""

from __future__ import annotations

import os
import socket

import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from helpers import gpt2_ids, make_gpt2, make_vit, max_dev, single_thread, vit_images  # noqa: F401

import lmc_core as lmc
from lmc_core import distributed
from lmc_core.profiles import get_profile
from lmc_core.train import train_model

TINY_VIT = {  # four optimiser steps of a small ViT on 256 Fashion-MNIST images, no dropout
    "device": "cpu", "eval.batch_size": 256, "eval.test_images": 256, "vit.patch_size": 7, "vit.embed_dim": 32,
    "vit.depth": 1, "vit.num_heads": 2, "vit.mlp_dim": 64, "vit.train_subset": 256, "vit.epochs": 1,
    "vit.batch_size": 63, "vit.warmup_epochs": 0.5,
}


def _run() -> dict:
    """Everything compared, computed the same way in one process and in each of two."""
    torch.set_num_threads(1)
    # 1. One gradient of a deterministic model: a batch of 7 split 3 / 4.
    model = make_vit(seed=0)
    x, y = vit_images(model, batch=7), torch.arange(7) % 5
    xs, ys, weight = distributed.shard(x, y)
    wrapped = distributed.wrap(model, seed=0)
    (F.cross_entropy(wrapped(xs), ys) * weight).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    # 2. Learned matching of two GPT-2s: two epochs of three batches of 5 sequences.
    a, b = make_gpt2(seed=0), make_gpt2(seed=1)
    batches = [(gpt2_ids(a, batch=5, seed=s), None) for s in range(3)]
    result = lmc.align(a, b, "learned_matching", data=batches, epochs=2, iterations=2, lr=1e-2)
    # 3. Training: a batch of 63 images is split 31 / 32.
    trained = train_model("vit", get_profile("smoke", TINY_VIT), seed=0, progress=False)
    return {"grads": grads, "residual": result.symmetry.residual, "heads": result.symmetry.heads.read,
            "mlp": result.symmetry.mlp.read, "lm_loss": result.history["train_loss"],
            "state": trained.state_dict(), "train_loss": trained.lmc_meta["history"][0]["train_loss"]}


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    distributed.setup("gloo")
    try:
        results = _run()
        if distributed.is_main():
            torch.save(results, out)
    finally:
        distributed.teardown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(tmp_path):
    out = str(tmp_path / "two.pt")
    mp.spawn(_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    two = torch.load(out)
    one = _run()
    assert not distributed.active()
    assert max(max_dev(one["grads"][k], two["grads"][k]) for k in one["grads"]) < 1e-6
    assert max_dev(one["residual"], two["residual"]) < 1e-5
    assert torch.equal(one["heads"], two["heads"]) and torch.equal(one["mlp"], two["mlp"])
    assert max(abs(p - q) for p, q in zip(one["lm_loss"], two["lm_loss"], strict=True)) < 1e-5
    assert max(max_dev(one["state"][k], two["state"][k]) for k in one["state"]) < 1e-4
    assert abs(one["train_loss"] - two["train_loss"]) < 1e-5
