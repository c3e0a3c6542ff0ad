"""The checkpoint cache on its own: exact round trips, misses, and corrupt, mismatched or half-written
entries discarded rather than trusted. (The trainer's use of it is tested in tests/study.)"""

from __future__ import annotations

import json

import pytest
import torch
from helpers import make_vit

from lmc_core.cache import (
    META_FILE,
    MODEL_FILE,
    RESUME_FILE,
    CheckpointCache,
    file_sha256,
    spec_key,
)

SPEC = {"kind": "toy", "recipe": {"width": 8, "sizes": (1, 2)}, "seed": 0}


def test_key_is_canonical():
    """Key order and tuples vs lists (a spec read back from JSON) give the same key; any value
    that differs gives another."""
    reordered = {"seed": 0, "recipe": {"sizes": [1, 2], "width": 8}, "kind": "toy"}
    assert spec_key(SPEC) == spec_key(reordered) == spec_key(json.loads(json.dumps(SPEC)))
    assert spec_key(SPEC) != spec_key(SPEC | {"seed": 1})
    assert spec_key(SPEC) != spec_key(SPEC | {"recipe": {"width": 8, "sizes": (1, 3)}})


def test_default_root_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LMC_CACHE_DIR", str(tmp_path))
    assert CheckpointCache().root == tmp_path


def test_round_trip_is_exact(tmp_path):
    model, cache = make_vit(seed=0, dtype=torch.float32), CheckpointCache(tmp_path)
    assert cache.load(SPEC) is None  # a miss
    entry = cache.save(SPEC, model, {"epochs": 3})
    state, meta = cache.load(json.loads(json.dumps(SPEC)))
    assert meta == {"epochs": 3}
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert json.loads((entry / META_FILE).read_text())["sha256"] == file_sha256(entry / MODEL_FILE)
    assert sorted(p.name for p in entry.iterdir()) == [META_FILE, MODEL_FILE]  # no temporary files left


def test_entry_without_meta_is_a_miss(tmp_path):
    """meta.json is written last: weights without it are an interrupted save, not a model."""
    cache = CheckpointCache(tmp_path)
    entry = cache.save(SPEC, make_vit(seed=0, dtype=torch.float32), {})
    (entry / META_FILE).unlink()
    assert cache.load(SPEC) is None


@pytest.mark.parametrize("damage", ["weights", "meta_spec", "meta_json"])
def test_damaged_entries_are_discarded(tmp_path, damage):
    cache = CheckpointCache(tmp_path)
    entry = cache.save(SPEC, make_vit(seed=0, dtype=torch.float32), {})
    if damage == "weights":  # one byte flipped: the sha256 no longer matches
        data = bytearray((entry / MODEL_FILE).read_bytes())
        data[-1] ^= 0xFF
        (entry / MODEL_FILE).write_bytes(bytes(data))
    elif damage == "meta_spec":  # an entry whose meta describes another model
        meta = json.loads((entry / META_FILE).read_text())
        meta["spec"]["seed"] = 7
        (entry / META_FILE).write_text(json.dumps(meta))
    else:
        (entry / META_FILE).write_text("{not json")
    with pytest.warns(UserWarning, match="discarding entry"):
        assert cache.load(SPEC) is None
    assert not entry.exists()


def test_resume_state_round_trip_and_unreadable_state(tmp_path):
    cache = CheckpointCache(tmp_path)
    assert cache.load_resume(SPEC) is None
    cache.save_resume(SPEC, {"epoch": 2, "weights": torch.arange(4.0)})
    state = cache.load_resume(SPEC)
    assert state["epoch"] == 2 and torch.equal(state["weights"], torch.arange(4.0))
    assert cache.resume_path(SPEC).name == RESUME_FILE
    cache.resume_path(SPEC).write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="training starts over"):
        assert cache.load_resume(SPEC) is None
    assert not cache.resume_path(SPEC).exists()
    cache.save_resume(SPEC, {"epoch": 1})
    cache.clear_resume(SPEC)
    assert cache.load_resume(SPEC) is None


def test_safetensors_handles_shared_and_non_contiguous_tensors(tmp_path):
    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(3, 4)
            self.b = torch.nn.Linear(4, 3)
            self.b.weight = torch.nn.Parameter(self.a.weight.t())  # a transposed view: shared

    model, cache, spec = Tied(), CheckpointCache(tmp_path), {"kind": "toy", "seed": 0}
    cache.save(spec, model, {"note": "toy"})
    state, meta = cache.load(spec)
    assert meta == {"note": "toy"}
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_entries_used_name_every_model_loaded_or_stored(tmp_path):
    """The audit trail a results file records: the sha256 of each model, once, in order of use."""
    from lmc_core.cache import cache_uses, entries_used

    cache = CheckpointCache(tmp_path)
    before = cache_uses()
    first = cache.save(SPEC, make_vit(seed=0, dtype=torch.float32), {})
    other = SPEC | {"seed": 5}
    assert cache.load(other) is None  # a miss is not a model used
    cache.save(other, make_vit(seed=1, dtype=torch.float32), {})
    cache.load(SPEC)
    used = entries_used(since=before)
    assert [(u["kind"], u["seed"]) for u in used] == [("toy", 0), ("toy", 5)]
    assert used[0]["sha256"] == file_sha256(first / MODEL_FILE) and used[0]["key"] == spec_key(SPEC)
