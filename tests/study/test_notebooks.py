"""Every chapter notebook follows the book's conventions (a reader sees calls, not plumbing)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
PLUMBING = re.compile(r"^\s*(import |from \S+ import )|\bplt\.|start_run\(|savefig\(", re.M)


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_one_parameters_cell_and_hidden_plumbing(path):
    cells = [c for c in _cells(path) if c["cell_type"] == "code"]
    tagged = [c for c in cells if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} cells tagged 'parameters' (papermill needs one)"
    for line in "".join(tagged[0]["source"]).splitlines():  # shown: the book's code column clips longer
        assert len(line) <= 92, f"{path.name}: parameters line too long for the page: {line}"
    for cell in cells:
        source = "".join(cell["source"])
        tags = cell["metadata"].get("tags", [])
        if PLUMBING.search(source):
            assert "hide-input" in tags or "remove-cell" in tags, (
                f"{path.name}: a setup or plotting cell is shown to the reader; tag it hide-input:\n"
                + source[:200])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_title_first_and_math_in_latex(path):
    cells = _cells(path)
    assert cells[0]["cell_type"] == "markdown" and "".join(cells[0]["source"]).startswith("# ")
    for cell in cells:
        if cell["cell_type"] != "markdown":
            continue
        text = "".join(cell["source"])
        # Markdown eats underscores between words: subscripts belong in $...$ (MathJax)
        prose = re.sub(r"\$\$.*?\$\$|\$[^$]*\$|`[^`]*`|\[[^\]]*\]\([^)]*\)", "", text, flags=re.S)
        assert not re.search(r"\b[A-Za-z]+_\{?[A-Za-z0-9]+\}?.*\b[A-Za-z]+_\{", prose), (
            f"{path.name}: subscripts outside $...$ in: {prose[:200]}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_sources_carry_no_outputs(path):
    """notebooks/ holds sources: papermill writes the executed copies under book/runs/ (and the
    lab saves notebooks here without outputs)."""
    for cell in _cells(path):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [] and cell.get("execution_count") is None, (
                f"{path.name}: a code cell carries outputs or an execution count; clear them before committing")
        assert "execution" not in cell.get("metadata", {}), f"{path.name}: execution timings in a cell's metadata"
