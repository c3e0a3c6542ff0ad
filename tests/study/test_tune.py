"""scripts/tune.py on a tiny profile: it chooses the learned-matching budget and the permutation
rate from validation numbers, and never reads the test split (every way to it raises here)."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import load_script, single_thread  # noqa: F401  (autouse fixture: one torch thread)

import lmc_study.data.splits as splits
from lmc_study import experiments
from lmc_study.data.tokens import TokenDataset
from lmc_study.profiles import get_profile

TINY = {"device": "cpu", "eval.test_images": 256, "eval.test_blocks": 8, "eval.batch_size": 64,
        "vit.train_subset": 512, "vit.val_images": 256, "vit.epochs": 1, "vit.embed_dim": 32, "vit.depth": 1,
        "vit.num_heads": 2, "vit.mlp_dim": 64,
        "gpt2.n_layer": 1, "gpt2.n_head": 2, "gpt2.n_embd": 32, "gpt2.n_inner": 64, "gpt2.block_size": 32,
        "gpt2.train_blocks": 256, "gpt2.val_blocks": 8, "gpt2.max_epochs": 1, "gpt2.batch_size": 16,
        "align.wm_iterations": 2, "align.lm_steps_per_epoch": 3, "align.lm_batch_size": 16}


class ReadTestSplit(AssertionError):
    pass


def _poison_the_test_split(monkeypatch) -> None:
    real_load, real_blocks = splits.load_image_dataset, TokenDataset.blocks

    def load(name, split="train"):
        if split == "test":
            raise ReadTestSplit(f"read the test images of {name}")
        return real_load(name, split)

    def blocks(self, split, block_size):
        if split == "test":
            raise ReadTestSplit("read the test tokens")
        return real_blocks(self, split, block_size)

    monkeypatch.setattr(splits, "load_image_dataset", load)
    monkeypatch.setattr(TokenDataset, "blocks", blocks)


def test_tune_chooses_on_validation_and_never_reads_test(tmp_path, monkeypatch):
    monkeypatch.setenv("LMC_CACHE_DIR", str(tmp_path / "cache"))
    profile = get_profile("smoke", TINY)
    for kind in experiments.KINDS:  # the models, trained first (the trainer records test metrics)
        experiments.trained_models(kind, profile, [0, 1], torch.device("cpu"), progress=False)
    _poison_the_test_split(monkeypatch)
    for kind in experiments.KINDS:  # the poison works: every way to the test split raises
        with pytest.raises(ReadTestSplit):
            experiments.study_data(kind, profile, torch.device("cpu"))
    tune = load_script("tune")
    out = tmp_path / "tuning.json"
    sets = [x for key, value in TINY.items() for x in ("--set", f"{key}={json.dumps(value)}")]
    assert tune.main(["--profile", "smoke", "--out", str(out), "--max-epochs", "3", "--perm-lrs", "0.001", "0.1",
                      *sets]) == 0
    record = json.loads(out.read_text())
    assert record["split"] == "validation (never test)" and record["overrides"] == TINY
    for kind in experiments.KINDS:
        budget = record["kinds"][kind]["lm_budget"]
        barriers = budget["val_barrier_by_epoch"]
        assert len(barriers) == 4  # the start and 3 epochs
        first_small = next((e for e in (1, 2) if barriers[e] - barriers[e + 1] < record["tolerance"]), 3)
        assert budget["chosen_epochs"] == first_small
        assert set(record["kinds"][kind]["lm_perm_lr"]["val_barrier_by_rate"]) == {"0.001", "0.1"}
    sums = {r: sum(record["kinds"][k]["lm_perm_lr"]["val_barrier_by_rate"][r] for k in experiments.KINDS)
            for r in ("0.001", "0.1")}
    assert record["chosen"] == {"align.lm_epochs": max(record["kinds"][k]["lm_budget"]["chosen_epochs"]
                                                       for k in experiments.KINDS),
                                "align.lm_perm_lr": float(min(sums, key=sums.__getitem__))}
