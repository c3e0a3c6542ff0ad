#!/usr/bin/env python
"""Execute the book's notebooks with papermill into book/runs/<profile>/<name>/.

    python scripts/run_notebooks.py --profile smoke
    python scripts/run_notebooks.py --profile full --only 03_barriers --device cuda
    python scripts/run_notebooks.py --profile smoke -p overrides '{"vit.epochs": 1}' --force

Every notebook gets the parameters {profile, device, output_dir: "."} (plus any ``-p key value``)
and runs with its kernel's working directory set to its output directory, so results.json and
the figures it saves land beside the executed notebook.

Skipping: a run directory holds ``stamp.json`` with the sha256 of every input of the run (and the
environment it ran in, as its results.json records it: torch, processor, threads, data hashes): the
notebook's source, the parameters, the profile, the sources of the library and the study
package that the notebook imports (``library_closure``: its ``lmc_core`` / ``lmc_study`` imports
and, transitively, theirs, package ``__init__`` files included) and the files it reads (READS). A notebook none of whose inputs changed and
whose executed notebook and results.json exist is skipped (``--force`` runs it anyway); a run
that records inputs the current code no longer has (a module it stopped importing) stays current.

Atomicity: a notebook runs into ``book/runs/<profile>/.partial-<name>/`` and only a successful
run is moved into place (the stamp is written last, before the move), so a run directory is
always a complete run or absent. A failed run's partial output stays in the .partial directory
and its path is printed; the script goes on with the other notebooks and exits 1 at the end.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = ROOT / "notebooks"
RUNS_DIR = ROOT / "book" / "runs"
LIB_DIRS = (ROOT / "lmc_core", ROOT / "lmc_study")  # the library and the study package
STAMP_FILE = "stamp.json"
RESULTS_FILE = "results.json"
KERNEL = "python3"
PROFILE_NAMES = ("smoke", "cpu", "full", "paper")  # lmc_study.profiles.PROFILES (not imported: no torch)
# What a chapter reads besides its code (globs under the repository, {profile} filled in): a change
# to any of these makes its run stale too. 11 reads the other chapters' results of its profile.
READS = {
    "00_introduction": ("tuning/*.json", "bench/results/*.json"),
    "11_side_by_side": ("book/runs/{profile}/*/results.json",),
}


class ParameterError(ValueError):
    """A parameter the notebook's ``parameters`` cell does not define."""


@dataclass
class Outcome:
    name: str
    status: str  # "ran", "skipped", "failed"
    wall_s: float
    out_dir: Path
    message: str = ""


def notebook_parameters(path: Path) -> dict[str, Any]:
    """The parameters papermill finds in the notebook's cell tagged ``parameters``."""
    import papermill

    params = papermill.inspect_notebook(str(path))
    if not params:
        raise ParameterError(f"{path}: no cell tagged 'parameters' (papermill needs one)")
    return params


def check_parameters(path: Path, parameters: Mapping[str, Any]) -> None:
    """Raise ParameterError naming unknown parameters and listing the valid ones."""
    valid = notebook_parameters(path)
    unknown = sorted(set(parameters) - set(valid))
    if unknown:
        raise ParameterError(
            f"{path.name}: unknown parameter{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(unknown)}; valid parameters: {', '.join(valid)}")


def _module_files(lib_dir: Path, dotted: str) -> list[Path]:
    """The files Python runs to import ``<lib>.<dotted>``: every package __init__ on the way and
    the module itself (``dotted`` empty: the package). [] when it is not a module of ``lib_dir``."""
    files, here = [lib_dir / "__init__.py"], lib_dir
    for part in [p for p in dotted.split(".") if p]:
        if (here / part / "__init__.py").is_file():
            here = here / part
            files.append(here / "__init__.py")
        elif (here / f"{part}.py").is_file():
            files.append(here / f"{part}.py")
            break
        elif (here / part).is_dir():  # a namespace package: no __init__ to run
            here = here / part
        else:
            return []
    return [f for f in files if f.is_file()]


def _dirs(lib_dirs: Path | Sequence[Path]) -> list[Path]:
    return [lib_dirs] if isinstance(lib_dirs, Path) else list(lib_dirs)


def _imports_of(source: Path, lib_dirs: Path | Sequence[Path]) -> list[Path]:
    """Files of the packages ``lib_dirs`` imported by ``source`` (absolute or relative imports, at
    any depth of the file, so imports inside functions count too)."""
    dirs = _dirs(lib_dirs)
    home = next(d for d in dirs if source.is_relative_to(d))
    by_name = {d.name: d for d in dirs}
    parts = list(source.relative_to(home).parent.parts)
    found: list[Path] = []
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                lib = home
                base = parts[: len(parts) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] in by_name:
                lib = by_name[node.module.split(".")[0]]
                module = node.module.partition(".")[2]
            else:
                continue
            found += _module_files(lib, module)
            for alias in node.names:  # `from . import curves` imports a module
                found += _module_files(lib, f"{module}.{alias.name}".strip("."))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in by_name:
                    found += _module_files(by_name[alias.name.split(".")[0]], alias.name.partition(".")[2])
    return found


def library_closure(notebook: Path, lib_dirs: Path | Sequence[Path] = LIB_DIRS) -> list[Path]:
    """The source files of ``lib_dirs`` a notebook's code runs when imported: what its cells import
    from those packages and, transitively, what those modules import."""
    import nbformat

    code = "\n".join(c.source for c in nbformat.read(notebook, as_version=4).cells if c.cell_type == "code")
    todo: list[Path] = []
    for lib_dir in _dirs(lib_dirs):
        name = re.escape(lib_dir.name)
        for match in re.finditer(rf"^[ \t]*from[ \t]+{name}(\.[\w.]+)?[ \t]+import[ \t]+(\([^)]*\)|[\w \t,]+)",
                                 code, re.M):
            module = (match.group(1) or "").strip(".")
            todo += _module_files(lib_dir, module)
            for item in match.group(2).strip("()").split(","):
                if item.split():
                    todo += _module_files(lib_dir, f"{module}.{item.split()[0]}".strip("."))
        for match in re.finditer(rf"^[ \t]*import[ \t]+{name}(\.[\w.]+)?", code, re.M):
            todo += _module_files(lib_dir, (match.group(1) or "").strip("."))
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo += _imports_of(path, lib_dirs)
    return sorted(seen)


def stamp_inputs(notebook: Path, parameters: Mapping[str, Any], profile: str,
                 lib_dirs: Path | Sequence[Path] = LIB_DIRS, root: Path = ROOT) -> dict[str, str]:
    """sha256 of every input of a run: notebook source, parameters, profile, the library sources
    it imports (``library_closure``) and the files the chapter reads (READS; its own results
    excluded)."""
    def sha(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    inputs = {
        "notebook": sha(notebook.read_bytes()),
        "parameters": sha(json.dumps(parameters, sort_keys=True, default=str).encode()),
        "profile": sha(profile.encode()),
    }
    for src in library_closure(notebook, lib_dirs):
        lib = next(d for d in _dirs(lib_dirs) if src.is_relative_to(d))
        inputs[f"{lib.name}/{src.relative_to(lib).as_posix()}"] = sha(src.read_bytes())
    for pattern in READS.get(notebook.stem, ()):
        for path in sorted(root.glob(pattern.format(profile=profile))):
            if path.parent.name != notebook.stem and not any(p.startswith(".") for p in path.parts[-2:]):
                inputs[path.relative_to(root).as_posix()] = sha(path.read_bytes())
    return inputs


def inputs_digest(inputs: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(dict(inputs), sort_keys=True).encode()).hexdigest()


def stamp_digest(notebook: Path, parameters: Mapping[str, Any], profile: str,
                 lib_dirs: Path | Sequence[Path] = LIB_DIRS) -> str:
    """sha256 over the notebook source, the parameters, the profile and the library sources."""
    return inputs_digest(stamp_inputs(notebook, parameters, profile, lib_dirs))


def changed_inputs(out_dir: Path, inputs: Mapping[str, str]) -> list[str]:
    """Which of today's inputs differ from the stamp in ``out_dir`` (["no previous run"] when there
    is none). An input the run recorded but the current code no longer has is not a change."""
    try:
        old = json.loads((out_dir / STAMP_FILE).read_text()).get("inputs", {})
    except (OSError, ValueError):
        return ["no previous run"]
    return sorted(k for k in inputs if old.get(k) != inputs[k])


def is_up_to_date(out_dir: Path, name: str, inputs: Mapping[str, str]) -> bool:
    """True when out_dir holds a complete run (notebook + results.json) none of whose inputs changed."""
    return ((out_dir / f"{name}.ipynb").is_file() and (out_dir / RESULTS_FILE).is_file()
            and not changed_inputs(out_dir, inputs))


def _replace_dir(src: Path, dst: Path) -> None:
    """Move the finished run ``src`` to ``dst``; the old run stays whole until the swap."""
    old = dst.with_name(f".old-{dst.name}")
    if old.exists():
        shutil.rmtree(old)
    if dst.exists():
        os.replace(dst, old)
    os.replace(src, dst)
    if old.exists():
        shutil.rmtree(old)


def run_one(notebook: Path, *, profile: str, parameters: Mapping[str, Any], runs_dir: Path,
            force: bool = False, lib_dirs: Path | Sequence[Path] = LIB_DIRS, kernel: str = KERNEL,
            log=print) -> Outcome:
    """Run (or skip) one notebook; see the module docstring."""
    import nbformat
    import papermill

    name = notebook.stem
    out_dir = runs_dir / profile / name
    params = {"profile": profile, "output_dir": ".", **parameters}
    check_parameters(notebook, params)
    inputs = stamp_inputs(notebook, params, profile, lib_dirs)
    digest = inputs_digest(inputs)
    if not force and is_up_to_date(out_dir, name, inputs):
        return Outcome(name, "skipped", 0.0, out_dir, "unchanged")
    if force:
        log(f"  running {name}: --force")
    else:
        why = changed_inputs(out_dir, inputs) or ["incomplete run"]
        log(f"  running {name}: changed since the last run: {', '.join(why[:6])}"
            + (f" and {len(why) - 6} more" if len(why) > 6 else ""))

    partial = runs_dir / profile / f".partial-{name}"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    output = partial / f"{name}.ipynb"
    t0 = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(notebook), str(output), parameters=dict(params), kernel_name=kernel,
            cwd=str(partial), progress_bar=False, request_save_on_cell_execute=True,
        )
        if not (partial / RESULTS_FILE).is_file():
            raise RuntimeError(f"{name} ran but wrote no {RESULTS_FILE} (call run.save_results)")
    except Exception as exc:  # papermill's error carries the failing cell's traceback
        wall = time.perf_counter() - t0
        msg = str(exc).strip().splitlines()
        detail = "\n".join(msg[-8:]) if msg else type(exc).__name__
        return Outcome(name, "failed", wall, partial, detail)
    wall = time.perf_counter() - t0
    nb = nbformat.read(output, as_version=4)  # record final, repo-relative paths
    pm = nb.metadata.get("papermill", {})
    pm["input_path"] = _rel(notebook)
    pm["output_path"] = _rel(out_dir / f"{name}.ipynb")
    show_parameters_once(nb)
    nbformat.write(nb, output)
    stamp = {"sha256": digest, "notebook": _rel(notebook), "profile": profile,
             "parameters": params, "wall_time_s": round(wall, 2),
             "finished": time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime()), "inputs": inputs,
             "environment": _results_field(partial, "environment")}
    (partial / STAMP_FILE).write_text(json.dumps(stamp, indent=1, default=str) + "\n")
    _replace_dir(partial, out_dir)
    return Outcome(name, "ran", wall, out_dir)


def _results_field(run_dir: Path, key: str) -> Any:
    """A field of the results.json the notebook wrote (None when it wrote none): the stamp keeps
    the run's environment (torch, processor, threads, data hashes) beside its inputs."""
    try:
        return json.loads((run_dir / RESULTS_FILE).read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError):
        return None


def show_parameters_once(nb: Any) -> None:
    """The book shows one parameters cell with the values the run used: papermill's injected
    values are written into the notebook's own ``parameters`` cell (its comments kept), and the
    injected cell, which stays in the file as papermill's record, is removed from the page."""
    import ast

    cells = {tag: cell for cell in nb.cells if cell.cell_type == "code"
             for tag in cell.metadata.get("tags", []) if tag in ("parameters", "injected-parameters")}
    if "parameters" not in cells or "injected-parameters" not in cells:
        return
    injected_src = cells["injected-parameters"].source
    injected = {node.targets[0].id: ast.get_source_segment(injected_src, node.value)
                for node in ast.parse(injected_src).body
                if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)}
    lines = cells["parameters"].source.splitlines()
    for node in reversed(ast.parse(cells["parameters"].source).body):  # bottom up: spans stay valid
        if not (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)):
            continue
        name = node.targets[0].id
        if name not in injected:
            continue
        last = lines[node.end_lineno - 1]
        comment = last[node.end_col_offset:].strip()
        new = f"{name} = {injected[name]}" + (f"  {comment}" if comment.startswith("#") else "")
        lines[node.lineno - 1:node.end_lineno] = [new]
    cells["parameters"].source = "\n".join(lines)
    tags = cells["injected-parameters"].metadata.setdefault("tags", [])
    if "remove-cell" not in tags:
        tags.append("remove-cell")


def _rel(path: Path) -> str:
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def select_notebooks(only: Sequence[str] | None, notebooks_dir: Path = NOTEBOOKS_DIR
                     ) -> list[Path]:
    found = sorted(notebooks_dir.glob("*.ipynb"))
    if not only:
        return found
    by_name = {p.stem: p for p in found}
    wanted = [Path(o).stem for o in only]
    unknown = [w for w in wanted if w not in by_name]
    if unknown:
        raise SystemExit(f"error: unknown notebook(s) {', '.join(unknown)}; "
                         f"valid names: {', '.join(by_name) or '(none)'}")
    return [by_name[w] for w in dict.fromkeys(wanted)]


def parse_value(text: str) -> Any:
    """papermill-style: YAML scalars and flow collections ("3", "true", "{a: 1}"), else text."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", required=True, choices=PROFILE_NAMES)
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run only these notebooks")
    ap.add_argument("--force", action="store_true", help="run even when up to date")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                    help="auto: the profile's device (smoke: CPU; full: CUDA when available)")
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                    metavar=("KEY", "VALUE"), help="extra notebook parameter (YAML value)")
    ap.add_argument("--runs-dir", type=Path, default=RUNS_DIR)
    ap.add_argument("--notebooks-dir", type=Path, default=NOTEBOOKS_DIR)
    args = ap.parse_args(argv)

    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("LMC_DATA_DIR", str(ROOT / ".data"))
    os.environ.setdefault("LMC_CACHE_DIR", str(ROOT / ".cache"))
    # tqdm.auto warns at import in a kernel without ipywidgets; its text bars are what we want,
    # so the warning is only noise in the book (inherited by the kernels papermill starts).
    quiet = "ignore:IProgress not found"
    os.environ["PYTHONWARNINGS"] = ",".join(
        w for w in (os.environ.get("PYTHONWARNINGS"), quiet) if w)

    notebooks = select_notebooks(args.only, args.notebooks_dir)
    if not notebooks:
        print(f"no notebooks in {args.notebooks_dir}", file=sys.stderr)
        return 1
    extra = {k: parse_value(v) for k, v in args.parameter}
    params = {"device": args.device, **extra}
    try:  # every notebook's parameters are checked before anything runs
        for nb in notebooks:
            check_parameters(nb, {"profile": args.profile, "output_dir": ".", **params})
    except ParameterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    outcomes: list[Outcome] = []
    total0 = time.perf_counter()
    for nb in notebooks:
        print(f"[{args.profile}] {nb.name} ...", flush=True)
        out = run_one(nb, profile=args.profile, parameters=params, runs_dir=args.runs_dir,
                      force=args.force)
        outcomes.append(out)
        if out.status == "skipped":
            print(f"[{args.profile}] {nb.name}: skipped (unchanged; {_rel(out.out_dir)})")
        elif out.status == "ran":
            print(f"[{args.profile}] {nb.name}: done in {out.wall_s:.1f} s -> "
                  f"{_rel(out.out_dir / (out.name + '.ipynb'))}", flush=True)
        else:
            print(f"[{args.profile}] {nb.name}: FAILED after {out.wall_s:.1f} s\n"
                  f"  partial output: {_rel(out.out_dir / (out.name + '.ipynb'))}\n"
                  + "\n".join("  | " + line for line in out.message.splitlines()),
                  file=sys.stderr, flush=True)
    total = time.perf_counter() - total0
    print(f"\n{'notebook':40s} {'status':8s} {'wall':>9s}")
    for o in outcomes:
        print(f"{o.name:40s} {o.status:8s} {o.wall_s:8.1f}s")
    print(f"{'total':40s} {'':8s} {total:8.1f}s")
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        print("FAILED: " + ", ".join(f"{o.name} (partial output in {_rel(o.out_dir)})"
                                     for o in failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
