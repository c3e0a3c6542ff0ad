"""What every bench script records besides its timings: the commit, the peak memory, the file."""

from __future__ import annotations

import json
import os
import resource
import subprocess
from pathlib import Path


def git_commit() -> str:
    """The commit measured, with "-dirty" when tracked files differ from it."""
    try:
        return subprocess.check_output(["git", "describe", "--always", "--dirty", "--abbrev=7"], text=True,
                                       stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def peak_rss_mib() -> float:
    """The process's peak resident memory so far (Linux reports ru_maxrss in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def write_record(path: Path, record: dict) -> None:
    """Atomically: a half-written record never replaces a good one (the book shows bench/results/)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
