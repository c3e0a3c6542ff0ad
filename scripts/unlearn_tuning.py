"""Copy chapter 10's baseline tuning record into tuning/unlearn-<profile>.json.

    python scripts/unlearn_tuning.py --profile cpu

The chapter tunes its baselines itself (``lmc_study.unlearning_study.tune_baselines``: every
(learning rate, length) of the profile's grid on seed 0, chosen without test data) and keeps the
record in its results.json (key ``tuning``); this writes that record, with the run's provenance,
where the other tuning records live, so the introduction lists it beside them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lmc_study.report import atomic_write_text  # noqa: E402

CHAPTER = "10_unlearning"


def tuning_record(results: dict[str, Any]) -> dict[str, Any]:
    """The tuning/ record of a chapter-10 results.json: provenance, what was chosen, and the record."""
    tuning = results.get("tuning")
    if not tuning:
        raise ValueError(f"this results.json has no tuning record: run chapter 10 first "
                         f"(make reproduce PROFILE={results.get('profile', 'cpu')} RUN_ARGS='--only {CHAPTER}')")
    return {
        "tool": "unlearn", "profile": results["profile"], "device": results["device"],
        "threads": results.get("environment", {}).get("threads"), "torch": results["torch"],
        "commit": results["commit"], "split": "forget and retained training samples, validation images (never test)",
        "chosen": {f"{setting}.{method}": f"lr {e['chosen']['lr']:g}, {e['chosen']['length']} {e['length_unit']}"
                   for setting, record in tuning.items() for method, e in record["methods"].items()},
        "settings": tuning,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "book" / "runs")
    parser.add_argument("--out", type=Path, help="default: tuning/unlearn-<profile>.json")
    args = parser.parse_args(argv)
    source = args.runs_dir / args.profile / CHAPTER / "results.json"
    if not source.is_file():
        parser.error(f"{source} does not exist: run chapter 10 on profile {args.profile} first")
    record = tuning_record(json.loads(source.read_text(encoding="utf-8")))
    out = args.out or ROOT / "tuning" / f"unlearn-{args.profile}.json"
    atomic_write_text(out, json.dumps(record, indent=1) + "\n")
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
