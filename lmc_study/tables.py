"""The book's tables: markdown from rows, and the rows of benchmark and tuning records."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

HEADERS = {
    "label": "method", "method": "method", "n": "n", "loss_barrier": "loss barrier",
    "acc_barrier": "accuracy barrier", "loss_a": "loss A", "loss_b": "loss B",
    "acc_a": "accuracy A", "acc_b": "accuracy B", "mean": "mean", "se": "s.e.",
}


MODEL_NAMES = {"vit": "ViT", "gpt2": "GPT-2"}


def benchmark_rows(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The table of one bench/results record (bench/barrier.py, bench/align.py or bench/train.py
    --out): seconds or throughput, and speed-ups against the baseline measured in the same run."""
    if record.get("bench") == "barrier":
        return _barrier_bench_rows(record)
    if record.get("bench") == "align":
        return _align_bench_rows(record)
    return _train_bench_rows(record)


def _barrier_bench_rows(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per model and path: the naive loop of that path against the engine's own choice,
    each strategy forced, and the largest |Δ loss| of the engine against the naive loop."""
    data = f"{record['batches']} × {record['batch_size']}, {record['lambdas']} λ"
    rows = []
    for kind, paths in record["results"].items():
        for path, r in paths.items():
            def timed(name: str, r: Mapping[str, Any] = r) -> str:
                return f"{r[name]['seconds']:.2f} s ({r[name]['speedup']:.2f}x)"
            rows.append({"model": MODEL_NAMES[kind], "path": path, "data": data,
                         "naive loop": f"{r['naive']['seconds']:.2f} s",
                         f"engine ({record.get('engine_strategy', 'auto')})": timed("engine"),
                         "ensemble": timed("ensemble"), "ensemble, dense circuits": timed("ensemble_dense"),
                         "max |Δ loss| engine vs naive": r["engine"]["max_abs_dloss"]})
    return rows


def _align_bench_rows(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per model: learned matching's seconds per step in float32 and in bf16 autocast, and
    the paired difference of the barriers the two leave."""
    rows = []
    for kind in MODEL_NAMES:
        if kind not in record:
            continue
        r = record[kind]
        row = {"model": MODEL_NAMES[kind], "profile": record["profile"],
               "steps × pairs": f"{record['steps']} × {record['pairs']}",
               "float32": f"{r['fp32_s_per_step']:.3f} s/step"}
        if "bf16_s_per_step" in r:
            row |= {"bf16 autocast": f"{r['bf16_s_per_step']:.3f} s/step ({r['ratio']:.2f}x)",
                    "barrier, bf16 − float32": f"{r['barrier_diff_mean']:+.4f} ± {r['barrier_diff_se']:.4f} "
                                               f"({r['pairs_higher']}/{len(r['fp32_barriers'])} pairs higher)"}
        rows.append(row)
    return rows


def _train_bench_rows(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """bench/train.py: our trainer against a plain PyTorch loop (per profile when several were
    run), or with --seeds M, M seeds one by one against the same seeds at once."""
    if record.get("bench") == "train-seeds":
        return [{"model": MODEL_NAMES[kind], "profile": profile, "seeds": record["seeds"],
                 "one by one": f"{r['one_by_one']:,.0f} {r['unit']}", "at once": f"{r['at_once']:,.0f} {r['unit']}",
                 "ratio": f"{r['ratio']:.2f}x",
                 f"{r['memory']}, one by one / at once": f"{r['one_by_one_peak_mib']:,.0f} / {r['at_once_peak_mib']:,.0f} MiB"}
                for profile, kinds in record["results"].items() for kind, r in kinds.items()]
    if any(kind in record for kind in MODEL_NAMES):
        by_profile = {record.get("profile"): record}
    else:
        by_profile = {profile: record[profile] for profile in str(record.get("profile", "")).split(",") if profile in record}
    return [{"model": MODEL_NAMES[kind], "profile": profile,
             "ours": f"{r[kind]['ours']:,.0f} {r[kind]['unit']}",
             "plain PyTorch loop": f"{r[kind]['plain']:,.0f} {r[kind]['unit']}",
             "ratio": f"{r[kind]['ratio']:.2f}x"}
            for profile, r in by_profile.items() for kind in MODEL_NAMES if kind in r]


def tuning_heading(name: str, record: Mapping[str, Any]) -> str:
    """One line over a tuning record's table: which tool, profile, machine and commit, what it chose."""
    tool = {"tune_recipe": "scripts/tune_recipe.py, the training recipe",
            "unlearn": "chapter 10's unlearning baselines, copied by scripts/unlearn_tuning.py"}.get(
        record.get("tool"), "scripts/tune.py, the alignment settings")
    chosen = ", ".join(f"`{k}` = {v}" for k, v in record.get("chosen", {}).items())
    return (f"**`tuning/{name}.json`** ({tool}): profile `{record['profile']}`, {record['device']} "
            f"({record['threads']} threads), torch {record['torch']}, commit `{record.get('commit', '?')}`; "
            f"chosen: {chosen}")


def tuning_rows(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The table of one tuning record (scripts/tune.py or scripts/tune_recipe.py --out): per model
    kind, what was measured on validation and what it decided."""
    if record.get("tool") == "tune_recipe":
        return _recipe_rows(record)
    if record.get("tool") == "unlearn":
        return _unlearn_rows(record)
    chosen = record.get("chosen", {})
    rows = []
    for kind, entry in record["kinds"].items():
        name = "ViT" if kind == "vit" else "GPT-2"
        ends = entry["endpoints"]
        models = ", ".join(f"{m['val_loss']:.3f}" + (f" ({100 * m['val_accuracy']:.1f}%)"
                                                      if kind == "vit" and m.get("val_accuracy") else "")
                           for m in ends["models"])
        base = ", ".join(f"{k} {v:.3f}" for k, v in ends["baselines_val_loss"].items())
        rows.append({"model": name, "measured on validation": f"endpoint loss: {models}; {base}",
                     "decides": ends["target"]["rule"], "result": "met" if ends["target"]["met"] else "missed"})
        budget = entry["lm_budget"]
        curve = ", ".join(f"{e}: {b:.3f}" for e, b in enumerate(budget["val_barrier_by_epoch"]))
        rows.append({"model": name, "measured on validation": f"LM barrier after epoch ({budget['steps_per_epoch']} "
                                                              f"steps each) {curve}",
                     "decides": f"align.lm_epochs (first epoch after which the next gains < {record['tolerance']:g})",
                     "result": f"{budget['chosen_epochs']} epochs (both kinds: {chosen.get('align.lm_epochs')})"})
        if "lm_perm_lr" in entry:
            rates = ", ".join(f"{r}: {b:.3f}" for r, b in entry["lm_perm_lr"]["val_barrier_by_rate"].items())
            rows.append({"model": name, "measured on validation": f"LM-perm barrier by lm_perm_lr {rates}",
                         "decides": "align.lm_perm_lr (lowest summed over ViT and GPT-2)",
                         "result": f"{chosen.get('align.lm_perm_lr')}"})
    return rows


def _recipe_rows(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """scripts/tune_recipe.py: each change to the recipe against the recipe itself, on validation."""
    def losses(result: Mapping[str, Any]) -> str:
        return ", ".join(f"{m['val_loss']:.3f}" for m in result["models"])

    rows = []
    for kind, entry in record["kinds"].items():
        name = MODEL_NAMES.get(kind, kind)
        rows.append({"model": name, "recipe or change": "the recipe as it is",
                     "validation loss (per seed)": losses(entry["recipe"]), "difference": "—",
                     "decides": f"margin {entry['margin']:.3f} (the seeds' spread)"})
        for change, result in entry["changes"].items():
            verdict = ("adopted" if entry["chosen"] == change else "loses") if result["role"] == "regulariser" \
                else "the time budget: reported" + (", would help" if result["wins"] else "")
            rows.append({"model": name, "recipe or change": change,
                         "validation loss (per seed)": losses(result),
                         "difference": f"{result['difference']:+.3f}", "decides": verdict})
    return rows


def _unlearn_rows(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Chapter 10's baselines: every (lr, length) tried on seed 0 and the one kept, per setting."""
    rows = []
    for setting, entry in record["settings"].items():
        for method, tried in entry["methods"].items():
            unit = tried["length_unit"]
            measured = "; ".join(f"lr {c['lr']:g}, {c['length']} {unit}: forget {100 * c['forget_acc']:.1f}%, "
                                 f"retained {100 * c['retain_acc']:.1f}%" for c in tried["candidates"])
            chosen = f"lr {tried['chosen']['lr']:g}, {tried['chosen']['length']} {unit}"
            rows.append({"model": f"{setting}: {method.replace('_', ' ')}", "measured on validation": measured,
                         "decides": f"retained ≥ {100 * entry['retain_floor']:.1f}%, forget accuracy nearest "
                                    f"{100 * entry['target']:.1f}% ({entry['target_from']})",
                         "result": chosen if tried["any_eligible"] else f"none eligible: {chosen} (best retained)"})
    return rows


def _cell(value: Any, floatfmt: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return "—" if not math.isfinite(value) else format(value, floatfmt)
    if isinstance(value, list | tuple):
        return ", ".join(_cell(v, floatfmt) for v in value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Mapping[str, Any]],
                   columns: Sequence[str | tuple[str, str]] | None = None,
                   *, floatfmt: str = ".3f") -> str:
    """A markdown (pipe) table; ``columns`` are keys or (key, header) pairs."""
    rows = list(rows)
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    cols = [(c, HEADERS.get(c, c.replace("_", " "))) if isinstance(c, str) else tuple(c)
            for c in columns]
    lines = ["| " + " | ".join(_cell(h, floatfmt) for _, h in cols) + " |",
             "|" + "|".join(" --- " for _ in cols) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(k), floatfmt) for k, _ in cols) + " |")
    return "\n".join(lines)


def display_table(rows: Sequence[Mapping[str, Any]],
                  columns: Sequence[str | tuple[str, str]] | None = None,
                  *, floatfmt: str = ".3f") -> None:
    """Show :func:`markdown_table` as rendered markdown in the notebook (and so in the book)."""
    from IPython.display import Markdown, display

    display(Markdown(markdown_table(rows, columns, floatfmt=floatfmt)))
