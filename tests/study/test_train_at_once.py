"""Several seeds at once (train_models(at_once=True)): each seed gets train_model's model, history,
early stopping, cache entry and resume state.

Tolerances. Stacked training runs each seed's matmuls as one batched matmul (and, on the CPU,
attention through the math kernel instead of the flash one), whose sums may run in another order
than train_model's, so weights agree to float precision, not bit for bit. Adam normalises every
update to about lr per element, so a last-bit gradient difference can move a weight whose
gradient is near 0 by a fraction of lr per step, and the gap grows with the steps: over the runs
here (8 steps, lr 2e-3 / 4e-3; GPT-2 up to 24 steps) the largest |Δ weight| measured was 2.0e-5,
also with ATEN_CPU_CAPABILITY=default (a 24-step ViT, not run here, reaches 1.1e-4).
WEIGHT_ATOL = 2e-4 is 10x that and still 20x below the smallest difference between two seeds'
weights (max |Δ| over one tensor: 4.7e-3 or more; 0.13 or more over a model). The weight decay
is raised to 10 where weights are compared, so a parameter in the wrong decay group would shrink
by a factor 1 - lr·10 (about 0.98) per step, far outside the tolerance. Losses are means over many items and agree
closer: the largest relative difference measured was 1e-7 (LOSS_RTOL = 1e-5). Comparing an
at-once run with itself (resume, cache) is the same computation, so those checks are exact.
"""

import math

import pytest
import torch
from helpers import single_thread  # noqa: F401  (autouse fixture: one torch thread)
from test_train import same_weights, tiny

import lmc_study.train as train_mod
import lmc_study.train_stack as stack_mod
from lmc_core.cache import CheckpointCache
from lmc_study.train import model_spec, train_model, train_models
from lmc_study.train_stack import at_once_spec

WEIGHT_ATOL = 2e-4
LOSS_RTOL = 1e-5

# Dropout off (the stack draws its masks differently: equal in distribution only) and a large
# weight decay (module docstring above).
EXACT = {"gpt2.dropout": 0.0, "vit.weight_decay": 10.0, "gpt2.weight_decay": 10.0}


class Interrupted(Exception):
    pass


def max_weight_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return max((sa[k] - sb[k]).abs().max().item() for k in sa)


def assert_same_model(at_once: torch.nn.Module, alone: torch.nn.Module) -> None:
    """``at_once`` is ``alone`` up to the order of float sums: weights, history, metrics."""
    assert max_weight_diff(at_once, alone) <= WEIGHT_ATOL
    a, b = at_once.lmc_meta, alone.lmc_meta
    assert set(a) - set(b) == {"at_once", "at_once_seeds"} and set(b) - set(a) == set()
    for key in ("seed", "build", "n_params", "epochs_run", "best_epoch"):
        assert a[key] == b[key], key
    for key in ("best_val_loss", "final_val_loss", "final_train_loss", "test_loss"):
        assert math.isclose(a[key], b[key], rel_tol=LOSS_RTOL), key
    assert len(a["history"]) == len(b["history"])
    for ra, rb in zip(a["history"], b["history"], strict=True):
        assert ra.keys() == rb.keys() and ra["epoch"] == rb["epoch"]
        assert math.isclose(ra["lr"], rb["lr"], rel_tol=1e-12)
        for key in ("train_loss", "val_loss"):
            assert math.isclose(ra[key], rb[key], rel_tol=LOSS_RTOL), key


@pytest.mark.parametrize("kind", ["vit", "gpt2"])
def test_one_seed_at_once_is_train_model(kind):
    profile = tiny(EXACT)
    (model,) = train_models(kind, profile, [3], at_once=True, progress=False)
    assert_same_model(model, train_model(kind, profile, 3, progress=False))
    assert model.lmc_meta["at_once"] == 1 and not model.training


@pytest.mark.parametrize("kind", ["vit", "gpt2"])
def test_three_seeds_at_once_each_get_their_own_model(kind):
    profile = tiny(EXACT)
    models = train_models(kind, profile, [0, 1, 2], at_once=True, progress=False)
    for seed, model in zip([0, 1, 2], models, strict=True):
        assert model.lmc_meta["seed"] == seed and model.lmc_meta["at_once"] == 3
        assert_same_model(model, train_model(kind, profile, seed, progress=False))
    assert max_weight_diff(models[0], models[1]) > 100 * WEIGHT_ATOL


def test_early_stopping_per_seed(monkeypatch):
    """Seeds stop at different epochs (validation losses faked as in test_train); each ends with
    train_model's epochs, best epoch and weights, the best epoch's exactly."""
    profile = tiny({**EXACT, "gpt2.max_epochs": 6, "gpt2.patience": 2})
    val_losses = {
        0: [3.0, 2.0, 2.5, 2.7],  # best epoch 2, stops after 4
        1: [3.0, 2.9, 2.8, 2.7, 2.6, 2.5],  # improves to the end: all 6 epochs
        2: [3.0, 3.1, 3.2],  # best epoch 1, stops after 3
    }
    expected = {0: (4, 2), 1: (6, 6), 2: (3, 1)}  # seed: (epochs run, best epoch)
    real_evaluate, real_build = train_mod.evaluate, train_mod.build_model
    seed_of: dict[int, int] = {}  # id(model) -> seed
    state: dict = {}

    def build(*args, **kw):
        model = real_build(*args, **kw)
        seed_of[id(model)] = state["next_seed"].pop(0)
        return model

    def fake_evaluate(model, batches, **kw):
        seed = seed_of[id(model)]
        calls = state["calls"].setdefault(seed, [])
        if len(calls) == len(val_losses[seed]):  # validation done: this is the test set
            return real_evaluate(model, batches, **kw)
        calls.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"loss": val_losses[seed][len(calls) - 1], "accuracy": 0.0}

    for module in (train_mod, stack_mod):  # one by one, and at once
        monkeypatch.setattr(module, "build_model", build)
        monkeypatch.setattr(module, "evaluate", fake_evaluate)
    runs = {}
    for mode in ("alone", "at once"):
        state.update(next_seed=[0, 1, 2], calls={})
        if mode == "alone":
            runs[mode] = [train_model("gpt2", profile, s, progress=False) for s in (0, 1, 2)]
        else:
            runs[mode] = train_models("gpt2", profile, [0, 1, 2], at_once=True, progress=False)
        for seed, model in enumerate(runs[mode]):
            meta = model.lmc_meta
            assert (meta["epochs_run"], meta["best_epoch"]) == expected[seed], (mode, seed)
            assert meta["best_val_loss"] == min(val_losses[seed])
            assert [h["val_loss"] for h in meta["history"]] == val_losses[seed]
            best = state["calls"][seed][meta["best_epoch"] - 1]
            assert all(torch.equal(v, best[k]) for k, v in model.state_dict().items())
    for at_once, alone in zip(runs["at once"], runs["alone"], strict=True):
        assert_same_model(at_once, alone)


def test_cache_entries_are_shared_with_train_model(tmp_path, monkeypatch):
    cache, profile = CheckpointCache(tmp_path), tiny()
    first = train_models("vit", profile, [0, 1], at_once=True, cache=cache, progress=False)
    loaded = train_model("vit", profile, 0, cache=cache, progress=False)
    assert loaded.lmc_meta["from_cache"] and loaded.lmc_meta["at_once"] == 2
    assert same_weights(loaded, first[0])
    assert loaded.lmc_meta["test_loss"] == first[0].lmc_meta["test_loss"]

    trained = []  # seeds whose training task is set up: cache hits must not be among them
    real_task = train_mod._vit_task
    for module in (train_mod, stack_mod):
        monkeypatch.setattr(module, "_vit_task", lambda p, seed, d: trained.append(seed) or real_task(p, seed, d))
    again = train_models("vit", profile, [1, 2], at_once=True, cache=cache, progress=False)
    assert trained == [2]
    assert again[0].lmc_meta["from_cache"] and same_weights(again[0], first[1])
    assert not again[1].lmc_meta["from_cache"] and again[1].lmc_meta["at_once"] == 1
    assert all(not (cache.entry_dir(model_spec("vit", profile, s)) / "resume.pt").exists()
               for s in (0, 1, 2))


def interrupt_after(epoch: int):
    def on_epoch_end(e, record):
        if e == epoch:
            raise Interrupted
    return on_epoch_end


def test_interrupted_at_once_run_resumes_to_the_same_weights(tmp_path):
    # Dropout on: the resumed run must also continue the stack's random stream.
    profile = tiny({"gpt2.max_epochs": 3, "gpt2.patience": 3})
    seeds = [0, 1, 2]
    whole = train_models("gpt2", profile, seeds, at_once=True, progress=False,
                         cache=CheckpointCache(tmp_path / "whole"))
    cache = CheckpointCache(tmp_path / "cut")
    with pytest.raises(Interrupted):
        train_models("gpt2", profile, seeds, at_once=True, progress=False, cache=cache,
                     resume_interval_s=0, on_epoch_end=interrupt_after(2))
    specs = [at_once_spec("gpt2", profile, s, seeds) for s in seeds]  # dropout: the stack's own keys
    assert all(cache.load_resume(spec)["epoch"] == 2 for spec in specs)
    resumed = train_models("gpt2", profile, seeds, at_once=True, progress=False, cache=cache)
    for a, b in zip(resumed, whole, strict=True):
        assert same_weights(a, b) and not a.lmc_meta["from_cache"]
        assert [h["val_loss"] for h in a.lmc_meta["history"]] == \
            [h["val_loss"] for h in b.lmc_meta["history"]]
    assert all(cache.load_resume(spec) is None for spec in specs)
    assert not same_weights(whole[0], whole[1])


def test_resume_state_is_train_models_and_either_can_finish_it(tmp_path):
    """The at-once resume state of a seed has train_model's format and values (per-seed AdamW
    moments, groups, schedule), train_model finishes it, and seeds resumed at different epochs
    are finished one by one."""
    profile = tiny({**EXACT, "gpt2.max_epochs": 3, "gpt2.patience": 3})
    alone, stacked = CheckpointCache(tmp_path / "alone"), CheckpointCache(tmp_path / "stacked")
    with pytest.raises(Interrupted):
        train_model("gpt2", profile, 0, cache=alone, progress=False, resume_interval_s=0,
                    on_epoch_end=interrupt_after(1))
    with pytest.raises(Interrupted):
        train_models("gpt2", profile, [0, 1], at_once=True, cache=stacked, progress=False,
                     resume_interval_s=0, on_epoch_end=interrupt_after(1))
    spec = model_spec("gpt2", profile, 0)
    a, b = alone.load_resume(spec), stacked.load_resume(spec)
    assert a.keys() == b.keys() and a["epoch"] == b["epoch"] == 1
    assert a["scheduler"] == b["scheduler"]
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for i in sa:  # measured: |Δ| <= 1.5e-4 (|moment| + atol), so rtol 1e-3 has a 7x margin
        assert sa[i].keys() == sb[i].keys() and torch.equal(sa[i]["step"], sb[i]["step"])
        assert torch.allclose(sa[i]["exp_avg"], sb[i]["exp_avg"], rtol=1e-3, atol=1e-6)
        assert torch.allclose(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"], rtol=1e-3, atol=1e-9)
    assert max((a["model"][k] - b["model"][k]).abs().max().item() for k in a["model"]) <= WEIGHT_ATOL

    # Seed 0 resumes alone from the stack's state; seed 1's state (epoch 1) cannot join seed 2
    # (fresh) in a stack, so seed 1 is finished by train_model and seed 2 trained at once.
    reference = [train_model("gpt2", profile, s, progress=False) for s in (0, 1, 2)]
    finished = train_model("gpt2", profile, 0, cache=stacked, progress=False)
    assert max_weight_diff(finished, reference[0]) <= WEIGHT_ATOL
    one, two = train_models("gpt2", profile, [1, 2], at_once=True, cache=stacked, progress=False)
    assert "at_once" not in one.lmc_meta and two.lmc_meta["at_once"] == 1
    assert_same_model(two, reference[2])
    assert max_weight_diff(one, reference[1]) <= WEIGHT_ATOL


def test_at_once_refuses_torchrun(monkeypatch):
    monkeypatch.setattr(train_mod.distributed, "active", lambda: True)
    with pytest.raises(ValueError, match="torchrun"):
        train_models("vit", tiny(), [0, 1], at_once=True, progress=False)


def test_repeated_seeds_get_equal_but_separate_models():
    a, b = train_models("vit", tiny(), [5, 5], at_once=True, progress=False)
    assert a is not b and same_weights(a, b) and a.lmc_meta["at_once"] == 1


def test_with_dropout_a_stack_has_cache_entries_of_its_own(tmp_path):
    """Dropout masks come from the stack's one stream, so a stacked model depends on its stack
    mates: its entry names them, and train_model never loads it (nor the stack train_model's)."""
    cache, profile = CheckpointCache(tmp_path), tiny()  # gpt2.dropout 0.1
    assert "stack" not in at_once_spec("vit", profile, 0, [0, 1])
    assert at_once_spec("gpt2", profile, 0, [1, 0, 1])["stack"] == [0, 1]
    first = train_models("gpt2", profile, [0, 1], at_once=True, cache=cache, progress=False)
    assert first[0].lmc_meta["at_once_seeds"] == [0, 1]
    alone = train_model("gpt2", profile, 0, cache=cache, progress=False)
    assert not alone.lmc_meta["from_cache"] and not same_weights(alone, first[0])
    again = train_models("gpt2", profile, [1, 0], at_once=True, cache=cache, progress=False)
    assert all(m.lmc_meta["from_cache"] for m in again)
    assert same_weights(again[1], first[0]) and same_weights(again[0], first[1])
