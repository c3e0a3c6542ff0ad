"""The trainer through the checkpoint cache: hits skip training, corrupt or mismatched entries are rebuilt, interrupted
runs resume to the same weights as uninterrupted ones."""

import json

import pytest
from helpers import single_thread  # noqa: F401  (autouse fixture: one torch thread)
from test_train import same_weights, tiny

import lmc_study.train as train_mod
from lmc_core.cache import META_FILE, MODEL_FILE, RESUME_FILE, CheckpointCache, spec_key
from lmc_study.train import model_spec, train_model


class Interrupted(Exception):
    pass


@pytest.fixture
def count_training(monkeypatch):
    """Counts how many times train_model really trains (sets up a training task)."""
    calls = []
    real_task = train_mod._vit_task

    def task(*args, **kw):
        calls.append("vit")
        return real_task(*args, **kw)

    monkeypatch.setattr(train_mod, "_vit_task", task)
    return calls


def test_key_is_canonical_and_covers_the_recipe():
    profile = tiny()
    spec = model_spec("vit", profile, 0)
    assert spec_key(spec) == spec_key(json.loads(json.dumps(spec)))  # tuples/lists, key order
    assert spec_key(spec) != spec_key(model_spec("vit", profile, 1))
    assert spec_key(spec) != spec_key(model_spec("vit", tiny({"vit.lr": 1e-3}), 0))
    assert spec_key(spec) != spec_key(model_spec("vit", tiny({"vit.train_subset": 128}), 0))


def test_miss_then_hit(tmp_path, count_training):
    cache, profile = CheckpointCache(tmp_path), tiny()
    first = train_model("vit", profile, 0, cache=cache, progress=False)
    entry = cache.entry_dir(model_spec("vit", profile, 0))
    assert (entry / MODEL_FILE).exists() and (entry / META_FILE).exists()
    assert not (entry / RESUME_FILE).exists()
    second = train_model("vit", profile, 0, cache=cache, progress=False)
    assert len(count_training) == 1  # the second call did not train
    assert same_weights(first, second) and not second.training
    assert second.lmc_meta["from_cache"] and not first.lmc_meta["from_cache"]
    assert second.lmc_meta["test_accuracy"] == first.lmc_meta["test_accuracy"]


def test_corrupt_weights_are_detected_and_retrained(tmp_path, count_training):
    cache, profile = CheckpointCache(tmp_path), tiny()
    first = train_model("vit", profile, 0, cache=cache, progress=False)
    path = cache.entry_dir(model_spec("vit", profile, 0)) / MODEL_FILE
    data = bytearray(path.read_bytes())
    data[-10:] = bytes(b ^ 0xFF for b in data[-10:])  # flip bytes inside a tensor
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="sha256"):
        again = train_model("vit", profile, 0, cache=cache, progress=False)
    assert len(count_training) == 2 and same_weights(first, again)
    assert cache.load(model_spec("vit", profile, 0)) is not None  # the rebuilt entry is valid


def test_unreadable_meta_and_mismatched_meta_are_rebuilt(tmp_path, count_training):
    cache, profile = CheckpointCache(tmp_path), tiny()
    spec = model_spec("vit", profile, 0)
    train_model("vit", profile, 0, cache=cache, progress=False)
    meta_path = cache.entry_dir(spec) / META_FILE
    meta = json.loads(meta_path.read_text())
    meta["spec"]["seed"] = 1  # an entry that claims to be another model
    meta_path.write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="different model"):
        train_model("vit", profile, 0, cache=cache, progress=False)
    assert len(count_training) == 2
    meta_path.write_text("{not json")
    with pytest.warns(UserWarning, match="discarding"):
        train_model("vit", profile, 0, cache=cache, progress=False)
    assert len(count_training) == 3


@pytest.mark.parametrize("kind", ["vit", "gpt2"])
def test_interrupted_run_resumes_to_identical_weights(tmp_path, kind):
    profile = tiny({"vit.epochs": 3, "gpt2.max_epochs": 3, "gpt2.patience": 3})
    reference = train_model(kind, profile, 0, cache=CheckpointCache(tmp_path / "a"), progress=False)

    cache = CheckpointCache(tmp_path / "b")

    def stop_after_first(epoch, record):
        if epoch == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_model(kind, profile, 0, cache=cache, progress=False, resume_interval_s=0,
                    on_epoch_end=stop_after_first)
    spec = model_spec(kind, profile, 0)
    assert cache.resume_path(spec).exists() and cache.load(spec) is None

    epochs_seen = []
    resumed = train_model(kind, profile, 0, cache=cache, progress=False, resume_interval_s=0,
                          on_epoch_end=lambda e, r: epochs_seen.append(e))
    assert epochs_seen == [2, 3]  # picked up after epoch 1
    assert same_weights(reference, resumed)
    assert resumed.lmc_meta["epochs_run"] == 3
    assert [h["train_loss"] for h in resumed.lmc_meta["history"]] == \
        [h["train_loss"] for h in reference.lmc_meta["history"]]
    assert not cache.resume_path(spec).exists()
