"""Progress bars go to the process's own stderr, never into a captured (notebook) stream."""

from __future__ import annotations

import io
import sys

from lmc_core.progress import progress_bar


def test_bar_writes_to_the_process_stderr_not_the_captured_one(monkeypatch):
    captured, terminal = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", captured)  # what a Jupyter kernel does to sys.stderr
    monkeypatch.setattr(sys, "__stderr__", terminal)
    assert list(progress_bar(range(3), desc="work", disable=False, mininterval=0)) == [0, 1, 2]
    assert captured.getvalue() == "" and "work" in terminal.getvalue() and "3/3" in terminal.getvalue()
    with progress_bar(total=2, desc="manual", disable=False, dynamic_ncols=False) as bar:
        bar.update(2)
    assert "manual" in terminal.getvalue()
