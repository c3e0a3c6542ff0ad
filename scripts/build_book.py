#!/usr/bin/env python
"""Build the Jupyter Book (1.x, Sphinx) from the executed notebooks under book/runs/.

    python scripts/build_book.py                      # HTML: book/_build/html/index.html, and its PDF
    python scripts/build_book.py --no-pdf             # HTML only
    python scripts/build_book.py --profiles smoke --path-output book/_build/smoke   # make smoke's book

For every notebook in notebooks/ the book renders the run of the first profile in
``--profiles`` that has one: ``runs/full/<name>/`` (the paper-scale run on a GPU), else
``runs/cpu/<name>/`` (the committed reference run), else ``runs/smoke/<name>/``; a notebook with
none is left out with a warning. The chosen run is copied to ``book/chapters/<name>/`` with a
provenance note under its title (profile, commit, date, device, wall time) and, when the notebook
or the code it imports changed since the run (its stamp's inputs), a warning naming what changed and
the command that refreshes it. ``_toc.yml`` and the first page ``intro.md`` are generated and
say the same for the whole book. Nothing is executed at build time (execute_notebooks: "off");
warnings are errors (-W -n --keep-going); MathJax is served from ``_static`` (see
book_assets.py) and the HTML is checked for assets fetched from the web at view time. Then
Chromium prints the pages into one PDF, ``lmc-book.pdf`` beside index.html (book_pdf.py), which
the first page links to.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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
PROFILE_PREFERENCE = ("full", "cpu", "smoke")
CHAPTERS_DIR = "chapters"  # under book/: the rendered copies of the chosen runs (generated)
sys.path.insert(0, str(SCRIPTS))

from book_assets import ensure_mathjax  # noqa: E402
from book_pdf import NO_CHROMIUM, PDF_NAME, build_pdf  # noqa: E402
from check_book import external_assets, find_chromium  # noqa: E402
from run_notebooks import STAMP_FILE, changed_inputs, stamp_inputs  # noqa: E402

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

:::{{admonition}} Re-run or edit a chapter
- As the book ran it: `make reproduce PROFILE=cpu RUN_ARGS="--only 03_vit_pairwise"`.
- At other settings: `.venv/bin/papermill notebooks/03_vit_pairwise.ipynb out.ipynb -p profile smoke
  -p overrides '{{"experiment.n_pairs": 5}}'`.
- Interactively: `make lab` starts JupyterLab on the chapters and prints its address. A chapter
  runs top to bottom as it is (profile `smoke`); change its parameters cell (profile,
  overrides) to explore. Its results and figures go to `book/runs/lab/`, and saving keeps the
  notebook free of outputs.
:::

{pdf}
"""
PDF_LINK = f'<a href="{PDF_NAME}">Download the whole book as one PDF</a> (printed from these pages).'
NO_PDF = "(The PDF of this book is printed by Chromium, which this build did not have.)"


@dataclass
class Chapter:
    name: str
    profile: str
    run_dir: Path  # book/runs/<profile>/<name>
    title: str
    results: dict[str, Any]
    changed: list[str]  # stamp inputs that changed since the run (notebook, lmc_core/...); [] when current
    stamp: dict[str, Any]  # run_notebooks.py's stamp.json: the whole run's wall time, finish time

    @property
    def docname(self) -> str:
        """The chapter's page in the book, relative to book/, without suffix."""
        return f"{CHAPTERS_DIR}/{self.name}/{self.name}"

    @property
    def stale(self) -> bool:
        return bool(self.changed)

    @property
    def refresh_command(self) -> str:
        if self.profile == "smoke":
            return f'make smoke RUN_ARGS="--only {self.name}"'
        return f'make reproduce PROFILE={self.profile} RUN_ARGS="--only {self.name}"'


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


def changed_since_run(run_dir: Path, source: Path, profile: str) -> list[str]:
    """The stamp inputs (notebook source, parameters, lmc_core and lmc_study files) that differ from the run's."""
    try:
        stamp = json.loads((run_dir / STAMP_FILE).read_text())
        return changed_inputs(run_dir, stamp_inputs(source, stamp["parameters"], profile))
    except (OSError, ValueError, KeyError):
        return ["no stamp.json"]


def _read_stamp(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / STAMP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def choose_runs(book_dir: Path = BOOK_DIR, notebooks_dir: Path = NOTEBOOKS_DIR,
                preference: tuple[str, ...] = PROFILE_PREFERENCE, log=print) -> list[Chapter]:
    """One Chapter per notebook with a run: the first profile of ``preference`` that has one."""
    chapters = []
    for source in sorted(notebooks_dir.glob("*.ipynb")):
        name = source.stem
        for profile in preference:
            run_dir = book_dir / "runs" / profile / name
            executed, results = run_dir / f"{name}.ipynb", run_dir / "results.json"
            if executed.is_file() and results.is_file():
                chapters.append(Chapter(
                    name=name, profile=profile, run_dir=run_dir, title=notebook_title(executed),
                    results=json.loads(results.read_text(encoding="utf-8")),
                    changed=changed_since_run(run_dir, source, profile), stamp=_read_stamp(run_dir)))
                break
        else:
            log(f"warning: {name}: no run under {book_dir / 'runs'}/{{{','.join(preference)}}}; "
                f"left out of the book (run scripts/run_notebooks.py first)")
    return chapters


def _finished(c: Chapter) -> str:
    return str(c.stamp.get("finished") or c.results.get("created") or "?")[:16].replace("T", " ")


def _changed_list(changed: list[str], most: int = 6) -> str:
    shown = ", ".join(f"`{x}`" for x in changed[:most])
    return shown + (f" and {len(changed) - most} more" if len(changed) > most else "")


def provenance_note(c: Chapter) -> str:
    """The note under a chapter's title: where its numbers come from, and whether they are current."""
    r = c.results
    wall = c.stamp.get("wall_time_s", r.get("wall_time_s"))
    text = (f":::{{note}}\nThe numbers on this page come from the **{c.profile}** profile run of commit "
            f"`{r.get('commit', '?')}` on {r.get('device', '?')}, finished {_finished(c)} UTC"
            f"{'' if wall is None else f' ({wall:.0f} s)'}.\n:::\n")
    checks = _check_note(r)
    if checks:
        text += "\n" + checks
    if c.changed:
        text += (f"\n:::{{warning}}\nSince this run, {_changed_list(c.changed)} changed: the current code "
                 f"may give other numbers. `{c.refresh_command}` re-runs this chapter.\n:::\n")
    return text


def _check_note(results: dict[str, Any]) -> str:
    """A folded note with what a reader needs to check the numbers: torch, processor, threads,
    SIMD kernels, the sha256 of each data file and of each trained model the run used."""
    env, models = results.get("environment"), results.get("models") or []
    if not env:
        return ""
    lines = [f"Torch {env.get('torch')} on {env.get('gpu') or env.get('cpu')}, {env.get('threads')} threads, "
             f"{env.get('cpu_capability')} kernels. The same processor and thread count give the same "
             "models and numbers bit for bit. Another processor rounds some sums differently, and "
             "training can amplify that: retrained there, a model may come out as another model of the "
             "same recipe. The sha256 below tell which case a retrained model is.", ""]
    data = env.get("data_sha256") or {}
    if data:
        lines += ["| data file | sha256 |", "| --- | --- |"]
        lines += [f"| {name} | `{digest[:16]}` |" for name, digest in data.items()] + [""]
    if models:
        lines += ["| trained model | seed | sha256 of its weights |", "| --- | --- | --- |"]
        lines += [f"| {m.get('kind')} | {m.get('seed', '—')} | `{m['sha256'][:16]}` |" for m in models] + [""]
    return (f":::{{admonition}} Check these numbers: environment, data and {len(models)} model(s)\n"
            ":class: dropdown\n" + "\n".join(lines) + "\n:::\n")


def stage_chapter(book_dir: Path, c: Chapter) -> Path:
    """Copy the chosen run to book/chapters/<name>/ with the provenance note under the title."""
    dst = book_dir / CHAPTERS_DIR / c.name
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(c.run_dir, dst)
    path = dst / f"{c.name}.ipynb"
    nb = json.loads(path.read_text(encoding="utf-8"))
    cells = nb.get("cells", [])
    with_ids = nb.get("nbformat", 4) >= 4 and nb.get("nbformat_minor", 0) >= 5

    def markdown(lines: list[str], cell_id: str) -> dict[str, Any]:
        return {"cell_type": "markdown", "metadata": {}, "source": lines} | ({"id": cell_id} if with_ids else {})

    at = 0
    for i, cell in enumerate(cells):
        lines = "".join(cell.get("source", [])).splitlines(keepends=True)
        title = next((j for j, line in enumerate(lines) if line.startswith("# ")), None)
        if cell.get("cell_type") == "markdown" and title is not None:
            # the note goes right under the title line: the rest of the cell follows it
            cells[i]["source"], rest = lines[: title + 1], lines[title + 1:]
            if rest:
                cells.insert(i + 1, markdown(rest, "lmc-after-title"))
            at = i + 1
            break
    cells.insert(at, markdown(provenance_note(c).splitlines(keepends=True), "lmc-provenance"))
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def write_toc(book_dir: Path, chapters: list[Chapter], root: str = "intro") -> Path:
    lines = ["# Generated by scripts/build_book.py: do not edit.", "format: jb-book",
             f"root: {root}"]
    if chapters:
        lines.append("chapters:")
        lines += [f"- file: {c.docname}" for c in chapters]
    path = book_dir / "_toc.yml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


PROFILE_LABELS = {
    "full": "the **full profile** (the paper's architectures on a GPU)",
    "cpu": "the **cpu profile**: small models trained on all the data on 2 CPU cores, not the paper's scale",
    "smoke": "the **smoke profile** (CPU, small models) — not the paper-scale numbers",
}


def runs_statement(chapters: list[Chapter]) -> str:
    """Markdown saying which runs the book renders, and which are older than the code."""
    if not chapters:
        return "No chapter has been run yet: `make reproduce PROFILE=cpu` (or `make smoke`) runs them.\n"
    parts = []
    for profile in dict.fromkeys(c.profile for c in chapters):
        these = [c for c in chapters if c.profile == profile]
        which = "All chapters show" if len(these) == len(chapters) else f"{len(these)} of {len(chapters)} chapters show"
        devices = sorted({str(c.results.get("device", "?")) for c in these})
        commits = sorted({str(c.results.get("commit", "?")) for c in these})
        label = PROFILE_LABELS.get(profile, f"the **{profile}** profile")
        kind = "note" if profile == "full" else "warning" if profile == "smoke" else "important"
        more = (" `make reproduce PROFILE=full` on a GPU runs the paper-scale profile; its committed runs "
                "replace these pages." if profile != "full" else "")
        parts.append(f":::{{{kind}}}\n{which} {label}, on {', '.join(devices)}, commit "
                     f"{', '.join(f'`{c}`' for c in commits)}.{more}\n:::\n")
    stale = [c for c in chapters if c.stale]
    if stale:
        parts.append(":::{warning}\nThe notebook or its code changed since these runs, so the current code may "
                     "give other numbers (each chapter says what changed and how to re-run it): "
                     + ", ".join(f"{{doc}}`{c.docname}`" for c in stale) + ".\n:::\n")
    # The wall time is the whole notebook run (stamp.json, kernel start included), the same
    # figure run_notebooks.py prints; results.json's own is measured inside the notebook.
    rows = ["| chapter | profile, data | device | commit | wall time | finished (UTC) |",
            "| --- | --- | --- | --- | --- | --- |"]
    for c in chapters:
        r = c.results
        wall = c.stamp.get("wall_time_s", r.get("wall_time_s"))
        rows.append(
            f"| {{doc}}`{c.docname}` | {c.profile}, {r.get('dataset', '?')} | "
            f"{r.get('device', '?')} | `{r.get('commit', '?')}`{' (stale)' if c.stale else ''} | "
            f"{'?' if wall is None else f'{wall:.0f} s'} | {_finished(c)} |")
    parts.append("\n".join(rows) + "\n")
    return "\n".join(parts)


def write_intro(book_dir: Path, chapters: list[Chapter], pdf: bool = True) -> Path:
    """The first page; ``pdf``: whether the build prints the PDF it links to."""
    path = book_dir / "intro.md"
    text = (INTRO.format(pdf=PDF_LINK if pdf else NO_PDF) + "\n## Which runs this book shows\n\n"
            + runs_statement(chapters))
    path.write_text(text, encoding="utf-8")
    return path


def jupyter_book() -> list[str]:
    exe = Path(sys.executable).with_name("jupyter-book")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "jupyter_book.cli.main"]


def build(book_dir: Path = BOOK_DIR, builder: str = "html", strict: bool = True,
          quiet: bool = False, path_output: Path | None = None) -> int:
    """Run ``jupyter-book build`` (all pages) into ``path_output``/_build (default: the book's);
    return its exit status."""
    cmd = [*jupyter_book(), "build", str(book_dir), "--all", "--builder", builder]
    if path_output is not None:
        cmd += ["--path-output", str(path_output)]
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
    ap.add_argument("--profiles", nargs="+", default=list(PROFILE_PREFERENCE),
                    help="runs to render, in order of preference (default: %(default)s)")
    ap.add_argument("--path-output", type=Path, help="build into PATH/_build/html (default: the book's _build)")
    ap.add_argument("--no-pdf", action="store_true", help="do not print the PDF")
    ap.add_argument("--no-strict", action="store_true", help="warnings are not errors")
    args = ap.parse_args(argv)
    chapters = choose_runs(args.book_dir, args.notebooks_dir, tuple(args.profiles))
    if not chapters:
        print(f"error: no executed notebooks under {args.book_dir / 'runs'}/{{{','.join(args.profiles)}}}; run "
              "`make smoke` or `make reproduce PROFILE=cpu`", file=sys.stderr)
        return 1
    shutil.rmtree(args.book_dir / CHAPTERS_DIR, ignore_errors=True)
    for c in chapters:
        stage_chapter(args.book_dir, c)
    write_toc(args.book_dir, chapters)
    printing = not args.no_pdf and find_chromium() is not None
    write_intro(args.book_dir, chapters, pdf=printing)
    ensure_mathjax(args.book_dir / "_static")
    for c in chapters:
        print(f"  {c.name}: {c.profile} run ({c.results.get('device', '?')}, commit {c.results.get('commit', '?')})"
              + (f" [stale: {', '.join(c.changed[:3])}{' ...' if len(c.changed) > 3 else ''}]" if c.stale else ""))
    t0 = time.perf_counter()
    rc = build(args.book_dir, strict=not args.no_strict, path_output=args.path_output)
    took = time.perf_counter() - t0
    if rc:
        print(f"error: jupyter-book build failed (exit {rc}) after {took:.1f} s", file=sys.stderr)
        return rc
    html = (args.path_output or args.book_dir) / "_build" / "html"
    remote = external_assets(html)
    if remote:
        print("error: the HTML loads assets from the web at view time:\n  "
              + "\n  ".join(remote), file=sys.stderr)
        return 1
    print(f"HTML built in {took:.1f} s: {(html / 'index.html').resolve()}")
    if not args.no_pdf and not printing:
        print(f"PDF skipped: no Chromium to print it ({NO_CHROMIUM})")
    elif printing:
        t0 = time.perf_counter()
        try:
            pdf = build_pdf(html, args.book_dir / "_toc.yml", log=lambda *a: None)
        except RuntimeError as err:
            print(f"error: the PDF was not printed: {err}", file=sys.stderr)
            return 1
        print(f"PDF printed in {time.perf_counter() - t0:.1f} s: {pdf.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
