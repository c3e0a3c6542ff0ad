"""The book as a whole: which chapters ran, with what, and the verdicts across them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .paper import ZERO_BARRIER
from .report import REPO_ROOT, RESULTS_FILE, format_duration, load_results
from .table2 import (
    Comparison,
    PairedDifference,
    agree,
    group_comparisons,
    method_order,
    order_counts,
)


def find_results(runs_dir: str | Path, *, exclude: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Every `<runs_dir>/<chapter>/results.json` (sorted by chapter), as records with an added
    "path". Directories starting with "." (partial runs) and chapters in `exclude` are skipped;
    an unreadable file becomes a record with an "error" instead of rows."""
    runs = Path(runs_dir)
    excluded = set(exclude)
    out = []
    if not runs.is_dir():
        return out
    for path in sorted(runs.glob(f"*/{RESULTS_FILE}")):
        chapter = path.parent.name
        if chapter.startswith(".") or chapter in excluded:
            continue
        try:
            record = load_results(path)
        except (OSError, ValueError) as exc:
            record = {"notebook": chapter, "rows": [], "error": f"{type(exc).__name__}: {exc}"}
        record["path"] = str(path)
        out.append(record)
    return out


def default_runs_dir(output_dir: str | Path, profile: str) -> Path:
    """Where the other chapters of `profile` wrote their results: the parent of `output_dir` when
    it holds another chapter's `*/results.json` (the papermill layout book/runs/<profile>/<chapter>/,
    or the lab's book/runs/lab/<profile>/<chapter>/), else the committed book/runs/<profile>/."""
    out = Path(output_dir).resolve()
    if any(p.parent != out for p in out.parent.glob(f"*/{RESULTS_FILE}")):
        return out.parent
    return REPO_ROOT / "book" / "runs" / profile


def chapter_inventory(records: Sequence[Mapping[str, Any]], notebooks_dir: str | Path, profile: str,
                      exclude: Iterable[str] = ()) -> list[dict[str, Any]]:
    """One row per chapter notebook in `notebooks_dir` (except `exclude`): whether its results
    were found ("ok", "missing", "unreadable", or "other profile: <name>") and their provenance."""
    by_name = {str(r.get("notebook")): r for r in records}
    by_dir = {Path(str(r.get("path", ""))).parent.name: r for r in records}
    excluded = set(exclude)
    names = [p.stem for p in sorted(Path(notebooks_dir).glob("*.ipynb")) if p.stem not in excluded]
    stale = [n for n in by_dir if n not in names and n not in excluded]
    rows = []
    for name in names + stale:
        record = by_dir.get(name) or by_name.get(name)
        if record is None:
            rows.append({"chapter": name, "status": "missing"})
            continue
        if name in stale:
            rows.append({"chapter": name, "status": "stale: no such notebook", "profile": record.get("profile"),
                         "commit": record.get("commit")})
            continue
        if record.get("error"):
            rows.append({"chapter": name, "status": "unreadable", "error": record["error"]})
            continue
        status = "ok" if record.get("profile") == profile else f"other profile: {record.get('profile')}"
        wall = record.get("wall_time_s")
        rows.append({"chapter": name, "status": status, "profile": record.get("profile"),
                     "dataset": record.get("dataset"), "device": record.get("device"),
                     "commit": record.get("commit"), "rows": len(record.get("rows", [])),
                     "wall time": format_duration(float(wall)) if wall is not None else None,
                     "created": record.get("created")})
    return rows


def profile_sentence(profile: str) -> str:
    """What numbers of this profile can and cannot be compared with the paper's."""
    from .profiles import PROFILES

    if profile == "smoke" and "smoke" in PROFILES:
        g, v = PROFILES["smoke"].gpt2, PROFILES["smoke"].vit
        return (f"These are **smoke** numbers: small models trained for minutes on a CPU (GPT-2 with "
                f"{g.n_layer} layers of width {g.n_embd}, a {g.tokenizer} vocabulary and a {g.block_size}-token "
                f"context; ViT with {v.depth} layers of width {v.embed_dim}), so their magnitudes are not "
                "comparable with the paper's; only the order of the methods is.")
    if profile == "cpu" and "cpu" in PROFILES:
        g, v = PROFILES["cpu"].gpt2, PROFILES["cpu"].vit
        return (f"These are **cpu** numbers: small models trained on all the data on 2 CPU cores until they beat "
                f"the trivial baselines (GPT-2 with {g.n_layer} layers of width {g.n_embd}, a {g.tokenizer} "
                f"vocabulary and a {g.block_size}-token context; ViT with {v.depth} layers of width "
                f"{v.embed_dim}), not the paper's architectures: their magnitudes are not directly comparable "
                "with the paper's; the order of the methods is.")
    if profile == "full":
        return ("These are **full** numbers: the paper's architectures trained on our data sets, on a "
                "GPU, with shorter schedules than the paper's; magnitudes are comparable with the "
                "paper's up to the difference of data sets.")
    return (f"These are **{profile}** numbers: the paper's recipes as written; magnitudes are "
            "comparable with the paper's up to the difference of data sets.")


def inventory_sentences(inventory: Sequence[Mapping[str, Any]], profile: str) -> list[str]:
    """Plain sentences on which chapters' results were found."""
    ok = [r["chapter"] for r in inventory if r["status"] == "ok"]
    missing = [r["chapter"] for r in inventory if r["status"] == "missing"]
    other = [f"{r['chapter']} ({r['status']})" for r in inventory
             if r["status"] not in ("ok", "missing")]
    out = [f"Results of profile {profile} found for {len(ok)} of {len(inventory)} chapters"
           + (f": {', '.join(ok)}." if ok else ".")]
    if missing:
        out.append(f"Missing (not run with this profile yet, or failed): {', '.join(missing)}.")
    if other:
        out.append(f"Not used: {', '.join(other)}.")
    return out


def verdict_sentences(comparisons: Sequence[Comparison], profile: str,
                      paired: Mapping[tuple[str, str, str], Sequence[PairedDifference]] | None = None
                      ) -> list[str]:
    """A summary over all our data sets: how many relations of the paper's order hold (resolved,
    or in the mean only), and whether LM reaches about zero, plus what the profile's numbers
    mean. `paired`: `paired_by_group` of the same records, which then decides what is resolved."""
    groups = group_comparisons(comparisons)
    if not groups:
        return ["No pairwise results were found, so nothing can be compared with the paper yet.",
                profile_sentence(profile)]
    out = []
    for (kind, dataset, prof), group in groups.items():
        checks = method_order(group, (paired or {}).get((kind, dataset, prof)))
        resolved, mean_only, failed = order_counts(checks)
        lm = {c.method: c for c in group}.get("learned_matching")
        where = f"{'ViT' if kind == 'vit' else 'GPT-2'} on {dataset}"
        text = f"{where}: {len(resolved)} of {len(checks)} relations of the paper's method order hold and are resolved"
        if mean_only:
            text += (f", {len(mean_only)} {agree(len(mean_only), 'holds', 'hold')} in the mean but "
                     f"{agree(len(mean_only), 'is', 'are')} not resolved")
        if failed:
            text += f", {len(failed)} {agree(len(failed), 'does', 'do')} not hold"
        if checks and len(resolved) == len(checks):
            text += " — the order agrees with the paper"
        elif checks and not failed:
            text += " — the order agrees with the paper in the mean, but not every relation is resolved"
        if lm is not None:
            text += (f"; learned matching leaves {lm.loss_barrier:.3f}"
                     + (" (about zero, as in the paper)" if lm.loss_barrier <= ZERO_BARRIER else
                        " (not about zero, unlike the paper)"))
        out.append(text + ".")
        if prof != profile:
            out.append(f"(Those numbers come from profile {prof}, not {profile}.)")
    out.append(profile_sentence(profile))
    return out
