#!/usr/bin/env python
"""Build the Jupyter Book (1.x, Sphinx) from the executed notebooks under book/runs/.

    python scripts/build_book.py            # HTML: book/_build/html/index.html, and its PDF
    python scripts/build_book.py --no-pdf   # HTML only

For every notebook in notebooks/ the book renders ``runs/full/<name>/<name>.ipynb`` when that
run exists (the full runs are committed), else ``runs/smoke/<name>/<name>.ipynb``; a notebook with
neither is left out with a warning. ``_toc.yml`` and the first page ``intro.md`` are generated:
the first page says which runs are rendered (profile, device, commit, from each results.json)
and warns when smoke runs are shown. Nothing is executed at build time (execute_notebooks:
"off"); warnings are errors (-W -n --keep-going); MathJax is served from ``_static`` (see
book_assets.py) and the HTML is checked for assets fetched from the web at view time. Then
Chromium prints the pages into one PDF, ``lmc-book.pdf`` beside index.html (book_pdf.py), which
the first page links to.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parent
ROOT = SCRIPTS.parent
BOOK_DIR = ROOT / "book"
NOTEBOOKS_DIR = ROOT / "notebooks"
PROFILE_PREFERENCE = ("full", "smoke")
sys.path.insert(0, str(SCRIPTS))

from book_assets import ensure_mathjax  # noqa: E402
from book_pdf import PDF_NAME, build_pdf  # noqa: E402
from check_book import external_assets  # noqa: E402
from run_notebooks import STAMP_FILE, stamp_digest  # noqa: E402

INTRO = """\
# Generalized Linear Mode Connectivity for Transformers

This book reproduces and extends *Generalized Linear Mode Connectivity for Transformers*
(Theus, Cabodi, Anagnostidis, Orvieto, Singh, Boeva; NeurIPS 2025;
[arXiv 2506.22712](https://arxiv.org/abs/2506.22712); the authors' code is linked from that page).
Two independently trained Transformers usually sit in different basins: averaging their weights
gives a model far worse than either (a *loss barrier*). The paper removes the barrier by
aligning one model to the other under the symmetries of the architecture — permutations,
semi-permutations, orthogonal maps of the residual stream and invertible maps inside attention
heads — and then interpolating.

Every chapter is a notebook executed with [papermill](https://papermill.readthedocs.io) by
`scripts/run_notebooks.py`; its numbers, tables and figures come from that run's
`results.json`, saved beside the executed notebook. Each chapter ends with a provenance line
(dataset, profile, device, commit, torch version, wall time).

<a href="{pdf}">Download the whole book as one PDF</a> (printed from these pages).
"""


@dataclass
class Chapter:
    name: str
    profile: str
    docname: str  # path in the book, relative to book/, without suffix
    title: str
    results: dict[str, Any]
    stale: bool
    stamp: dict[str, Any]  # run_notebooks.py's stamp.json: the whole run's wall time, finish time


def notebook_title(path: Path) -> str:
    """The first markdown '# ' heading of a notebook (or the file's stem)."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            src = "".join(cell.get("source", []))
            for line in src.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return path.stem


def _is_stale(run_dir: Path, source: Path, profile: str) -> bool:
    """True when the notebook or lmc_core changed since the run (its stamp no longer matches)."""
    try:
        stamp = json.loads((run_dir / STAMP_FILE).read_text())
        return stamp["sha256"] != stamp_digest(source, stamp["parameters"], profile)
    except (OSError, ValueError, KeyError):
        return True


def _read_stamp(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / STAMP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def choose_runs(book_dir: Path = BOOK_DIR, notebooks_dir: Path = NOTEBOOKS_DIR,
                preference: tuple[str, ...] = PROFILE_PREFERENCE, log=print) -> list[Chapter]:
    """One Chapter per notebook with a run: the full run when it exists, else the smoke run."""
    chapters = []
    for source in sorted(notebooks_dir.glob("*.ipynb")):
        name = source.stem
        for profile in preference:
            run_dir = book_dir / "runs" / profile / name
            executed, results = run_dir / f"{name}.ipynb", run_dir / "results.json"
            if executed.is_file() and results.is_file():
                chapters.append(Chapter(
                    name=name, profile=profile, docname=f"runs/{profile}/{name}/{name}",
                    title=notebook_title(executed),
                    results=json.loads(results.read_text(encoding="utf-8")),
                    stale=_is_stale(run_dir, source, profile), stamp=_read_stamp(run_dir)))
                break
        else:
            log(f"warning: {name}: no run under {book_dir / 'runs'}/{{{','.join(preference)}}}; "
                f"left out of the book (run scripts/run_notebooks.py first)")
    return chapters


def write_toc(book_dir: Path, chapters: list[Chapter], root: str = "intro") -> Path:
    lines = ["# Generated by scripts/build_book.py: do not edit.", "format: jb-book",
             f"root: {root}"]
    if chapters:
        lines.append("chapters:")
        lines += [f"- file: {c.docname}" for c in chapters]
    path = book_dir / "_toc.yml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def runs_statement(chapters: list[Chapter]) -> str:
    """Markdown saying which runs the book renders."""
    if not chapters:
        return "No chapter has been run yet: `make book` runs them.\n"
    parts = []
    full = [c for c in chapters if c.profile == "full"]
    smoke = [c for c in chapters if c.profile != "full"]
    if full:
        devices = sorted({c.results.get("device", "?") for c in full})
        commits = sorted({c.results.get("commit", "?") for c in full})
        which = "All chapters show" if not smoke else f"{len(full)} of {len(chapters)} chapters show"
        parts.append(f":::{{note}}\n{which} the **full profile** on {', '.join(devices)}, "
                     f"commit {', '.join(f'`{c}`' for c in commits)}.\n:::\n")
    if smoke:
        which = ("All chapters show" if not full
                 else f"{len(smoke)} of {len(chapters)} chapters show")
        profiles = sorted({c.profile for c in smoke})
        label = ("the **smoke profile** (CPU, small models) — not the paper-scale numbers"
                 if profiles == ["smoke"] else f"the **{', '.join(profiles)}** profile")
        parts.append(f":::{{warning}}\n{which} {label}. `make reproduce PROFILE=full` on a GPU "
                     f"runs the full profile; its committed runs replace these pages.\n:::\n")
    stale = [c for c in chapters if c.stale]
    if stale:
        parts.append(":::{important}\nThe notebook or `lmc_core` changed since these runs: "
                     + ", ".join(f"{{doc}}`{c.docname}`" for c in stale)
                     + ". Re-run them to refresh the numbers.\n:::\n")
    # The wall time is the whole notebook run (stamp.json, kernel start included), the same
    # figure run_notebooks.py prints; results.json's own is measured inside the notebook.
    rows = ["| chapter | profile, data | device | commit | wall time | finished |",
            "| --- | --- | --- | --- | --- | --- |"]
    for c in chapters:
        r = c.results
        wall = c.stamp.get("wall_time_s", r.get("wall_time_s"))
        finished = str(c.stamp.get("finished") or r.get("created") or "?")[:16].replace("T", " ")
        rows.append(
            f"| {{doc}}`{c.docname}` | {c.profile}, {r.get('dataset', '?')} | "
            f"{r.get('device', '?')} | `{r.get('commit', '?')}` | "
            f"{'?' if wall is None else f'{wall:.0f} s'} | {finished} |")
    parts.append("\n".join(rows) + "\n")
    return "\n".join(parts)


def write_intro(book_dir: Path, chapters: list[Chapter]) -> Path:
    path = book_dir / "intro.md"
    text = (INTRO.format(pdf=PDF_NAME) + "\n## Which runs this book shows\n\n" + runs_statement(chapters))
    path.write_text(text, encoding="utf-8")
    return path


def jupyter_book() -> list[str]:
    exe = Path(sys.executable).with_name("jupyter-book")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "jupyter_book.cli.main"]


def build(book_dir: Path = BOOK_DIR, builder: str = "html", strict: bool = True,
          quiet: bool = False) -> int:
    """Run ``jupyter-book build`` (all pages); return its exit status."""
    cmd = [*jupyter_book(), "build", str(book_dir), "--all", "--builder", builder]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    if quiet:
        cmd.append("-q")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    return subprocess.run(cmd, env=env).returncode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--book-dir", type=Path, default=BOOK_DIR)
    ap.add_argument("--notebooks-dir", type=Path, default=NOTEBOOKS_DIR)
    ap.add_argument("--no-pdf", action="store_true", help="do not print the PDF")
    ap.add_argument("--no-strict", action="store_true", help="warnings are not errors")
    args = ap.parse_args(argv)
    chapters = choose_runs(args.book_dir, args.notebooks_dir)
    if not chapters:
        print("error: no executed notebooks under book/runs/; run "
              "`python scripts/run_notebooks.py --profile smoke` (or `make book`)", file=sys.stderr)
        return 1
    write_toc(args.book_dir, chapters)
    write_intro(args.book_dir, chapters)
    ensure_mathjax(args.book_dir / "_static")
    for c in chapters:
        print(f"  {c.name}: {c.profile} run ({c.results.get('device', '?')}, "
              f"commit {c.results.get('commit', '?')}){' [stale]' if c.stale else ''}")
    t0 = time.perf_counter()
    rc = build(args.book_dir, strict=not args.no_strict)
    took = time.perf_counter() - t0
    if rc:
        print(f"error: jupyter-book build failed (exit {rc}) after {took:.1f} s", file=sys.stderr)
        return rc
    html = args.book_dir / "_build" / "html"
    remote = external_assets(html)
    if remote:
        print("error: the HTML loads assets from the web at view time:\n  "
              + "\n  ".join(remote), file=sys.stderr)
        return 1
    print(f"HTML built in {took:.1f} s: {(html / 'index.html').resolve()}")
    if not args.no_pdf:
        t0 = time.perf_counter()
        pdf = build_pdf(html, log=lambda *a: None)
        print(f"PDF printed in {time.perf_counter() - t0:.1f} s: {pdf.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
