"""A content-addressed cache of trained models, so the chapters of the book share their models.

An entry is keyed by the sha256 of a canonical JSON "spec": everything that decides the
weights (model kind, recipe with architecture, data and optimiser settings, seed, trainer
version). Its directory holds

    model.safetensors   the weights
    meta.json           the spec, the key, the sha256 of model.safetensors, training metadata
    resume.pt           only while training: the state to pick up an interrupted run

Every file is written to a temporary file in the same directory and moved into place with
os.replace, so a reader sees the old file or the new one, never half of one. meta.json is
written last: it is the commit marker, and an entry without it is a miss. A corrupt entry (hash
mismatch, unreadable file) or one whose meta does not match its spec is reported with a warning,
removed, and trained again.

Every entry a process loads or stores is noted (`entries_used`): its spec's kind and seed, its
key and the sha256 of its weights, so a results file can say which models its numbers came
from and someone who retrains can tell whether they got the same ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

MODEL_FILE = "model.safetensors"
META_FILE = "meta.json"
RESUME_FILE = "resume.pt"

_USES: list[dict[str, Any]] = []  # every load or store of an entry by this process, in order


def cache_uses() -> int:
    """How many loads and stores this process has made: a mark for `entries_used(since=...)`."""
    return len(_USES)


def entries_used(since: int = 0) -> list[dict[str, Any]]:
    """The entries this process loaded or stored after mark `since` (`cache_uses`), each once, in
    the order first used: kind, seed (None when the spec has none), key, sha256 of the weights."""
    distinct: dict[str, dict[str, Any]] = {}
    for use in _USES[since:]:
        distinct.setdefault(use["key"], use)
    return list(distinct.values())


def _note_use(spec: Mapping[str, Any], key: str, sha256: str) -> None:
    _USES.append({"kind": spec.get("kind"), "seed": spec.get("seed"), "key": key, "sha256": sha256})


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: equal specs give equal strings (tuples become
    lists, so a spec read back from disk compares equal to the one built in memory)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def spec_key(spec: Mapping[str, Any]) -> str:
    """sha256 hex digest of the canonical JSON of ``spec``."""
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary path next to ``path``, then move it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as f:  # flush to disk before the rename makes it visible
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def portable_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The model's state dict as independent, contiguous CPU tensors.

    safetensors refuses tensors that share memory (tied weights) or are non-contiguous views;
    cloning each one makes any state dict storable, and loading it back into a model with tied
    weights writes the same values twice.
    """
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


class CheckpointCache:
    """Trained models on disk, keyed by their spec (see the module docstring)."""

    def __init__(self, root: Path | str | None = None) -> None:
        default = os.environ.get("LMC_CACHE_DIR") or Path.home() / ".cache/lmc-book/checkpoints"
        self.root = Path(root if root is not None else default)

    def entry_dir(self, spec: Mapping[str, Any]) -> Path:
        """Directory of the entry for ``spec`` (it may not exist)."""
        return self.root / f"{spec.get('kind', 'model')}-{spec_key(spec)[:24]}"

    def resume_path(self, spec: Mapping[str, Any]) -> Path:
        """Where the resume state for ``spec`` lives while it trains."""
        return self.entry_dir(spec) / RESUME_FILE

    def load(self, spec: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]] | None:
        """(state dict, training metadata) of a valid entry, or None on a miss.

        A corrupt or mismatched entry is warned about and removed, so the caller retrains it.
        """
        entry = self.entry_dir(spec)
        if not (entry / META_FILE).exists():
            return None
        key = spec_key(spec)
        try:
            meta = json.loads((entry / META_FILE).read_text())
            if meta.get("key") != key or canonical_json(meta.get("spec")) != canonical_json(spec):
                raise ValueError("meta.json describes a different model than its key")
            if file_sha256(entry / MODEL_FILE) != meta.get("sha256"):
                raise ValueError(f"{MODEL_FILE} does not match the sha256 in {META_FILE}")
            state = load_file(entry / MODEL_FILE)
            _note_use(spec, key, meta["sha256"])
        except Exception as err:  # any unreadable or inconsistent file means: rebuild
            warnings.warn(f"checkpoint cache: discarding entry {entry} ({err}); it will be "
                          "trained again", stacklevel=2)
            shutil.rmtree(entry, ignore_errors=True)
            return None
        return state, meta["train"]

    def save(self, spec: Mapping[str, Any], model: nn.Module, train_meta: Mapping[str, Any]) -> Path:
        """Store ``model``'s weights and metadata under ``spec``; returns the entry directory."""
        entry = self.entry_dir(spec)
        entry.mkdir(parents=True, exist_ok=True)
        state = portable_state_dict(model)
        _atomic_write(entry / MODEL_FILE, lambda p: save_file(state, str(p)))
        meta = {
            "key": spec_key(spec),
            "spec": spec,
            "sha256": file_sha256(entry / MODEL_FILE),
            "train": dict(train_meta),
        }
        text = json.dumps(meta, indent=2, sort_keys=True)
        _atomic_write(entry / META_FILE, lambda p: p.write_text(text))
        _note_use(spec, meta["key"], meta["sha256"])
        return entry

    def save_resume(self, spec: Mapping[str, Any], state: Mapping[str, Any]) -> None:
        """Atomically store the state of an unfinished training run."""
        path = self.resume_path(spec)
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, lambda p: torch.save(dict(state), p))

    def load_resume(self, spec: Mapping[str, Any]) -> dict[str, Any] | None:
        """The resume state of an interrupted run, or None. An unreadable one is discarded."""
        path = self.resume_path(spec)
        if not path.exists():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            warnings.warn(f"checkpoint cache: discarding unreadable {path} ({err}); "
                          "training starts over", stacklevel=2)
            path.unlink(missing_ok=True)
            return None

    def clear_resume(self, spec: Mapping[str, Any]) -> None:
        """Remove the resume state once the model is stored."""
        self.resume_path(spec).unlink(missing_ok=True)
