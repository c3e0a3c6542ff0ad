"""Outputs of the command line, checked before the work and written whole or not at all.

A command first checks that it can write its --out (`check_output_dir`: the folder is writable,
and an existing --out is empty or an earlier output of the same command, so no other folder is
ever replaced), then writes into a staging folder beside it that is moved into place only when
everything is written (`staged_output_dir`). A failure half-way leaves --out as it was. Files and
folders get the permissions the umask gives, not the private ones of temporary files.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


class OutputError(ValueError):
    """An output that cannot or must not be written; the message says which and what to do."""


OUTPUT_MARKER = ".lmc-output"  # in every folder a command writes: the command's name


def _umask_mode(full: int) -> int:
    """``full`` (0o777 for folders, 0o666 for files) less the process's umask: what open() and
    mkdir() would have given, where mkdtemp / mkstemp give 0700 / 0600."""
    mask = os.umask(0)
    os.umask(mask)
    return full & ~mask


def check_output_dir(out: str | Path, command: str) -> Path:
    """Fail before any work when ``out`` cannot be written: its folder must be writable, and an
    existing ``out`` must be empty or an earlier output of ``command`` (its OUTPUT_MARKER says so),
    so no other folder is ever replaced."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file: choose a new --out")
    if out.is_dir() and any(out.iterdir()):
        marker = out / OUTPUT_MARKER
        if not marker.is_file() or marker.read_text().strip() != command:
            raise OutputError(f"--out {out} exists and is not an earlier output of this command: "
                           "choose a new --out or remove it")
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe = Path(tempfile.mkdtemp(prefix=f".{out.name}.probe-", dir=parent))
        probe.rmdir()
    except OSError as err:
        raise OutputError(f"--out {out}: cannot write in {parent} ({err.strerror}): choose a writable --out") from None
    return out


@contextlib.contextmanager
def staged_output_dir(out: str | Path, command: str) -> Iterator[Path]:
    """A staging folder beside ``out``, moved into place when the block ends without error (an
    earlier output of ``command`` is replaced whole); on any error the stage is removed and ``out``
    is as it was."""
    out = Path(out).resolve()
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    old = out.with_name(f".{out.name}.old-{stage.name.rsplit('-', 1)[-1]}")
    try:
        yield stage
        (stage / OUTPUT_MARKER).write_text(command + "\n")
        os.chmod(stage, _umask_mode(0o777))
        if out.exists():
            os.replace(out, old)
        try:
            os.replace(stage, out)
        except BaseException:
            if old.exists():
                os.replace(old, out)  # the earlier output back in place
            raise
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_json_atomically(path: str | Path, record: dict) -> None:
    """``path`` holds the whole record or its previous content, never part of it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2, default=float)
        os.chmod(tmp, _umask_mode(0o666))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
