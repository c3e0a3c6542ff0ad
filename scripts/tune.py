"""Choose a profile's tuned values on validation data, never on test, and write what was measured.

    python scripts/tune.py --profile cpu --out tuning/cpu.json

For each model kind (ViT on the validation images the training holds out, GPT-2 on the text's
validation split), on the pair of seeds (0, 1):

1. the endpoints against the trivial baselines, both on validation: the models' best
   validation loss (and ViT accuracy) next to the logistic regression's and the bigram's;
2. the learned-matching budget: learned matching for up to ``--max-epochs`` epochs of the
   profile's ``align.lm_steps_per_epoch`` steps, the validation loss barrier after each; the
   budget is the first epoch after which one more epoch lowers it by less than ``--tolerance``
   (the larger of the two kinds', as the profile has one budget);
3. ``align.lm_perm_lr``: learned matching with permutation residuals at that budget for each
   rate of ``--perm-lrs``; the rate with the lowest validation barrier (summed over the kinds).

No choice here reads the test split: the data come from ``study_data(..., with_test=False)`` and
``baselines(..., with_test=False)``, and the models' numbers from their validation history. (A model
trained here because the cache lacks it records its test metrics, as the trainer always does;
nothing here reads them.)
The models come from the checkpoint cache (trained now on a first run), so the study reuses
them. The output names the profile, device, torch version and commit, and says which value each
measurement chose; the profile's source cites it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lmc_core.alignment import align  # noqa: E402
from lmc_study import experiments  # noqa: E402
from lmc_study.baselines import baselines  # noqa: E402
from lmc_study.cli import parse_override  # noqa: E402
from lmc_study.profiles import PROFILES, Profile, get_profile  # noqa: E402


def endpoints(kind: str, models: list[torch.nn.Module], profile: Profile) -> dict[str, Any]:
    """Each model's best validation loss (and accuracy) next to the trivial baselines' best
    validation loss, with the issue's targets checked on validation."""
    rows = []
    for model in models:
        meta = model.lmc_meta
        best = min(meta["history"], key=lambda h: h["val_loss"])
        rows.append({"seed": meta["seed"], "val_loss": best["val_loss"], "val_accuracy": best.get("val_accuracy"),
                     "epochs_run": meta["epochs_run"], "train_wall_s": meta["wall_s"]})
    base = {b["model"]: min(b["val_losses"]) for b in baselines(kind, profile, with_test=False)}
    worst = max(r["val_loss"] for r in rows)
    if kind == "vit":
        accuracy = min(r["val_accuracy"] for r in rows)
        target = {"rule": "val accuracy >= 88% and val loss below the logistic regression's",
                  "met": accuracy >= 0.88 and worst < base["logistic regression"]}
    else:
        target = {"rule": "val loss at least 0.3 nats below the bigram's",
                  "met": worst <= base["bigram"] - 0.3}
    return {"models": rows, "baselines_val_loss": base, "target": target}


def lm_budget(kind: str, models: list[torch.nn.Module], profile: Profile, data: Any, val: Any,
              max_epochs: int, tolerance: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    found = align(models[0], models[1], "learned_matching", data=data.train,
                  **experiments.align_options(profile, epochs=max_epochs, eval_data=val))
    barriers = found.history["test_barrier"]  # measured on `val`: the history's name for eval_data
    chosen = next((e for e in range(1, max_epochs) if barriers[e] - barriers[e + 1] < tolerance), max_epochs)
    return {"steps_per_epoch": profile.align.lm_steps_per_epoch, "val_barrier_by_epoch": barriers, "chosen_epochs": chosen,
            "wall_s": time.perf_counter() - t0}


def perm_lr(kind: str, models: list[torch.nn.Module], profile: Profile, data: Any, val: Any, epochs: int,
            rates: list[float]) -> dict[str, Any]:
    from lmc_core.interpolation import barrier

    out = {}
    for rate in rates:
        found = align(models[0], models[1], "learned_matching", data=data.train,
                      **experiments.align_options(profile, epochs=epochs, perm_lr=rate, residual="permutation"))
        out[str(rate)] = barrier(found.model_a, found.model_b, val, lambdas=profile.experiment.lambdas).loss_barrier
    return {"val_barrier_by_rate": out}


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", required=True, choices=list(PROFILES))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--max-epochs", type=int, default=8)
    ap.add_argument("--tolerance", type=float, default=0.005, help="nats: a smaller fall ends the budget")
    ap.add_argument("--perm-lrs", type=float, nargs="+", default=[1e-3, 3e-2, 0.1])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a profile field, e.g. --set vit.epochs=1 (repeatable)")
    args = ap.parse_args(argv)
    overrides = dict(parse_override(item) for item in args.set)
    profile = get_profile(args.profile, overrides)
    device = torch.device("cpu") if profile.device == "cpu" else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    out: dict[str, Any] = {"profile": args.profile, "device": str(device), "cpu": platform.processor() or platform.machine(),
                           "threads": torch.get_num_threads(), "torch": torch.__version__, "commit": commit(),
                           "split": "validation (never test)", "tolerance": args.tolerance,
                           "overrides": overrides, "kinds": {}}
    for kind in experiments.KINDS:
        print(f"[{kind}] endpoints", flush=True)
        models = experiments.trained_models(kind, profile, [0, 1], device)
        data = experiments.study_data(kind, profile, device, with_test=False)
        val = data.val
        entry = {"endpoints": endpoints(kind, models, profile)}
        print(f"[{kind}] learned-matching budget", flush=True)
        entry["lm_budget"] = lm_budget(kind, models, profile, data, val, args.max_epochs, args.tolerance)
        out["kinds"][kind] = entry
    epochs = max(k["lm_budget"]["chosen_epochs"] for k in out["kinds"].values())
    out["chosen"] = {"align.lm_epochs": epochs}
    sums = {str(r): 0.0 for r in args.perm_lrs}
    for kind in experiments.KINDS:
        print(f"[{kind}] lm_perm_lr", flush=True)
        models = experiments.trained_models(kind, profile, [0, 1], device)
        data = experiments.study_data(kind, profile, device, with_test=False)
        val = data.val
        out["kinds"][kind]["lm_perm_lr"] = perm_lr(kind, models, profile, data, val, epochs, args.perm_lrs)
        for rate, value in out["kinds"][kind]["lm_perm_lr"]["val_barrier_by_rate"].items():
            sums[rate] += value
    out["chosen"]["align.lm_perm_lr"] = float(min(sums, key=sums.__getitem__))
    out["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=1) + "\n")
    os.replace(tmp, args.out)
    print(json.dumps(out["chosen"]))
    for kind, entry in out["kinds"].items():
        print(kind, "target met" if entry["endpoints"]["target"]["met"] else "TARGET MISSED",
              entry["endpoints"]["target"]["rule"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
