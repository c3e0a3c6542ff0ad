"""Progress bars reach the terminal running the study, never a notebook's outputs."""

from __future__ import annotations

import io
import os
import sys

import pytest

import lmc_core.progress as progress
from lmc_core.progress import progress_bar


class FakeKernelStream(io.StringIO):
    """What ipykernel puts in sys.stderr: captured output, plus the saved original descriptor."""

    __module__ = "ipykernel.iostream"

    def __init__(self, saved_fd: int | None):
        super().__init__()
        if saved_fd is not None:
            self._original_stdstream_copy = saved_fd


def test_outside_a_kernel_bars_go_to_stderr(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    assert list(progress_bar(range(3), desc="work", disable=False, mininterval=0)) == [0, 1, 2]
    assert "work" in err.getvalue() and "3/3" in err.getvalue()


def test_in_a_kernel_bars_go_to_the_saved_terminal(monkeypatch, tmp_path):
    terminal = tmp_path / "terminal.log"
    fd = os.open(terminal, os.O_WRONLY | os.O_CREAT)
    captured = FakeKernelStream(fd)
    monkeypatch.setattr(sys, "stderr", captured)
    monkeypatch.setattr(progress, "_terminal", None)
    with progress_bar(total=2, desc="manual", disable=False, mininterval=0) as bar:
        bar.update(2)
    progress._terminal.flush()
    os.close(fd)
    assert captured.getvalue() == "" and "manual" in terminal.read_text()


def test_in_a_kernel_without_a_saved_terminal_bars_are_off(monkeypatch):
    captured = FakeKernelStream(None)
    monkeypatch.setattr(sys, "stderr", captured)
    assert list(progress_bar(range(3), desc="quiet", disable=False)) == [0, 1, 2]
    assert captured.getvalue() == ""


def test_a_papermill_run_keeps_bars_out_of_the_notebook(tmp_path, monkeypatch):
    """The real thing: a kernel started by papermill, a bar shown in it (with the book's tools
    installed; the library alone has no notebooks)."""
    nbformat = pytest.importorskip("nbformat")
    papermill = pytest.importorskip("papermill")
    # as scripts/run_notebooks.py does: hub libraries' tqdm.auto warns at import in a kernel
    monkeypatch.setenv("PYTHONWARNINGS", "ignore:IProgress not found")
    # ipykernel leaves file descriptors uncaptured when it sees pytest's variable: the kernel must
    # capture them as it does under papermill outside the tests
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "from lmc_core.progress import progress_bar\n"
        "import time\n"
        "for _ in progress_bar(range(20), desc='training', disable=False, mininterval=0):\n"
        "    time.sleep(0.02)\n"
        "time.sleep(1.0)  # ipykernel forwards captured descriptor output from a thread\n"
        "print('done')")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    source, out = tmp_path / "in.ipynb", tmp_path / "out.ipynb"
    nbformat.write(nb, source)
    papermill.execute_notebook(str(source), str(out), kernel_name="python3", progress_bar=False,
                               cwd=str(tmp_path))
    outputs = nbformat.read(out, as_version=4).cells[0].outputs
    text = "".join(o.get("text", "") for o in outputs)
    assert text == "done\n", outputs  # no bar, nothing on stderr
