"""The trainer's weights for one seed: bit-identical run after run on the same thread count, and
within float rounding on another (torch splits its parallel reductions by thread count, and no
setting makes a CPU sum independent of that split). Measured on this tiny ViT after one epoch:
1.5e-5 in the weights; the smoke profile's models come out bit-identical on 1 and 2 threads."""

from __future__ import annotations

import subprocess
import sys

import torch

SCRIPT = """
import sys, torch
torch.set_num_threads(int(sys.argv[1]))
from lmc_study.profiles import get_profile
from lmc_study.train import train_model
tiny = {"device": "cpu", "eval.test_images": 256, "vit.train_subset": 512, "vit.epochs": 1, "vit.embed_dim": 32,
        "vit.depth": 1, "vit.num_heads": 2, "vit.mlp_dim": 64}
model = train_model("vit", get_profile("smoke", tiny), 3, progress=False)
torch.save({"state": model.state_dict(), "test_loss": model.lmc_meta["test_loss"]}, sys.argv[2])
"""


def _train(threads: int, out) -> dict:
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(threads), str(out)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    return torch.load(out)


def test_training_repeats_exactly_and_agrees_across_thread_counts(tmp_path):
    first, second, one = (_train(t, tmp_path / f"{i}.pt") for i, t in enumerate((2, 2, 1)))
    assert all(torch.equal(v, second["state"][k]) for k, v in first["state"].items())
    assert first["test_loss"] == second["test_loss"]
    assert max((v - one["state"][k]).abs().max().item() for k, v in first["state"].items()) < 1e-4
    assert abs(first["test_loss"] - one["test_loss"]) < 1e-4
