"""Check a profile's training recipe on validation data, never on test, and write what was measured.

    python scripts/tune_recipe.py --profile cpu --out tuning/recipe-cpu.json

The smoke and cpu recipes were first chosen looking at test accuracy (augmentation off, the
number of epochs, no dropout). This re-checks each of those choices on validation only: for
each model kind, the profile's recipe ("as is", seeds 0 and 1) against one change at a time
(seed 0, and seed 1 where ``--seeds`` says so). A model's number is its best validation loss over
the epochs it ran (the epoch the trainer keeps), and its validation accuracy for a ViT. A change
wins when its mean validation loss is lower than the recipe's by more than the recipe's own
seed spread (|seed 0 − seed 1|, at least ``--tolerance``): a smaller difference is not
distinguishable from the seed. Regularisers (augmentation, dropout) are adopted when they win.
The number of epochs is the profile's time budget, not a tuned value: one more epoch is measured
and reported (short runs gain from it), and adopted only by a change of budget. The models go to
the checkpoint cache, so the study reuses the recipe's own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lmc_core.cache import CheckpointCache  # noqa: E402
from lmc_study.profiles import PROFILES, Profile, get_profile  # noqa: E402
from lmc_study.report import git_commit  # noqa: E402
from lmc_study.train import train_model  # noqa: E402


def changes(kind: str, profile: Profile) -> dict[str, tuple[dict[str, Any], str]]:
    """The choices first made on test, each as one change to the recipe: (overrides, role), the
    role "regulariser" (adopted when it wins) or "budget" (reported)."""
    if kind == "vit":
        v = profile.vit
        return {f"augmentation {'off' if v.augment else 'on'}": ({"vit.augment": not v.augment}, "regulariser"),
                f"{v.epochs + 1} epochs": ({"vit.epochs": v.epochs + 1}, "budget")}
    g = profile.gpt2
    dropout = 0.1 if not g.dropout else 0.0
    return {f"dropout {dropout:g}": ({"gpt2.dropout": dropout}, "regulariser"),
            f"up to {g.max_epochs + 1} epochs (early stopping)": ({"gpt2.max_epochs": g.max_epochs + 1}, "budget")}


def validation(model: torch.nn.Module) -> dict[str, Any]:
    """The best epoch's validation numbers, as the trainer chose it; nothing from test."""
    meta = model.lmc_meta
    best = min(meta["history"], key=lambda h: h["val_loss"])
    return {"seed": meta["seed"], "val_loss": best["val_loss"], "val_accuracy": best.get("val_accuracy"),
            "epochs_run": meta["epochs_run"], "best_epoch": meta["best_epoch"], "train_wall_s": meta["wall_s"]}


def measure(kind: str, profile: Profile, overrides: dict[str, Any], seeds: list[int], cache: CheckpointCache,
            device: torch.device) -> dict[str, Any]:
    tuned = get_profile(profile.name, overrides)
    models = [validation(train_model(kind, tuned, s, device=device, cache=cache, progress=False)) for s in seeds]
    mean = sum(m["val_loss"] for m in models) / len(models)
    return {"overrides": overrides, "models": models, "mean_val_loss": mean}


def decide(kind: str, profile: Profile, seeds: list[int], tolerance: float, cache: CheckpointCache,
           device: torch.device) -> dict[str, Any]:
    base = measure(kind, profile, {}, [0, 1], cache, device)
    spread = max(tolerance, abs(base["models"][0]["val_loss"] - base["models"][1]["val_loss"]))
    entry: dict[str, Any] = {"recipe": base, "margin": spread, "changes": {}}
    for name, (overrides, role) in changes(kind, profile).items():
        print(f"[{kind}] {name}", flush=True)
        result = measure(kind, profile, overrides, seeds, cache, device)
        result["role"] = role
        result["difference"] = result["mean_val_loss"] - base["mean_val_loss"]
        result["wins"] = result["difference"] < -spread
        entry["changes"][name] = result
    winners = [n for n, r in entry["changes"].items() if r["wins"] and r["role"] == "regulariser"]
    entry["chosen"] = (min(winners, key=lambda n: entry["changes"][n]["difference"]) if winners
                       else "the recipe as is")
    return entry


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", required=True, choices=list(PROFILES))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of each changed recipe (default 0)")
    ap.add_argument("--tolerance", type=float, default=0.005, help="nats: the smallest margin a change must win by")
    args = ap.parse_args(argv)
    profile = get_profile(args.profile)
    device = torch.device("cpu") if profile.device == "cpu" else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    out: dict[str, Any] = {"tool": "tune_recipe", "profile": args.profile, "device": str(device),
                           "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                           "torch": torch.__version__, "commit": git_commit(), "split": "validation (never test)",
                           "rule": "a change wins when its mean validation loss is lower than the recipe's by more "
                                   "than the recipe's seed spread (at least the tolerance); a winning regulariser "
                                   "is adopted, a longer budget only reported",
                           "tolerance": args.tolerance, "kinds": {}}
    cache = CheckpointCache()
    t0 = time.perf_counter()
    for kind in ("vit", "gpt2"):
        out["kinds"][kind] = decide(kind, profile, args.seeds, args.tolerance, cache, device)
        print(f"[{kind}] chosen: {out['kinds'][kind]['chosen']}", flush=True)
    out["chosen"] = {kind: entry["chosen"] for kind, entry in out["kinds"].items()}
    out["wall_s"] = time.perf_counter() - t0
    out["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=1) + "\n")
    os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
