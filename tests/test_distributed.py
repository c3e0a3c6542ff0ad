"""Two gloo processes on the CPU against one: same gradients, same learned matching.

Each process takes its slice of every batch (`lmc_core.distributed.shard`, uneven slices
included) and the gradients are averaged over the processes, so two processes must follow the
single process's trajectory up to the order of floating-point sums. (Training under torchrun is
the study's: tests/study/test_train_distributed.py.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from helpers import gpt2_ids, make_gpt2, make_vit, max_dev, run_on_gloo, single_thread, vit_images  # noqa: F401

import lmc_core as lmc
from lmc_core import distributed


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
    return {"grads": grads, "residual": result.symmetry.residual, "heads": result.symmetry.heads.read,
            "mlp": result.symmetry.mlp.read, "lm_loss": result.history["train_loss"]}


def test_two_processes_match_one(tmp_path):
    two = run_on_gloo(_run, tmp_path)
    one = _run()
    assert not distributed.active()
    assert max(max_dev(one["grads"][k], two["grads"][k]) for k in one["grads"]) < 1e-6
    assert max_dev(one["residual"], two["residual"]) < 1e-5
    assert torch.equal(one["heads"], two["heads"]) and torch.equal(one["mlp"], two["mlp"])
    assert max(abs(p - q) for p, q in zip(one["lm_loss"], two["lm_loss"], strict=True)) < 1e-5
