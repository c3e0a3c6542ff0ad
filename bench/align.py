"""Learned matching per step: float32 against bf16 autocast, on the trained models of a profile.

    python bench/align.py --profile smoke --kinds gpt2 --pairs 3 --steps 50

For each pair (0, 1), (2, 3), … of the profile's trained models (from the checkpoint cache, or
trained now), runs `align(a, b, "learned_matching")` for one epoch of ``--steps`` steps in each
precision, from the same weight-matching start, and times the learned part (the whole call minus
weight matching alone, timed separately). Reports seconds per step, the ratio, the loss barrier
each run leaves on the profile's test set, and the paired difference of the barriers (bf16 −
float32: mean ± standard error over pairs, and how many pairs moved up), so that a speed-up is
shown next to what it does to the result. Also prints one JSON line with the device, torch
version, git commit, load average and peak memory. Run at an older commit (no `autocast`
option), it times float32 only: that is the baseline of a change to the objective.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from records import git_commit, peak_rss_mib, write_record  # noqa: E402

from lmc_core.alignment import OPTIONS, align  # noqa: E402
from lmc_core.interpolation import barrier  # noqa: E402
from lmc_study.experiments import align_options, seed_pairs, study_data, trained_models  # noqa: E402
from lmc_study.profiles import get_profile  # noqa: E402

PRECISIONS = {"fp32": False, "bf16": True}


def timed_alignment(a, b, data, options: dict, method: str):
    start = time.perf_counter()
    result = align(a, b, method, data=data.train, **options)
    return result, time.perf_counter() - start


def run(kind: str, args: argparse.Namespace, device: torch.device) -> dict:
    profile = get_profile(args.profile)
    data = study_data(kind, profile, device)
    pairs = seed_pairs(args.pairs)
    models = trained_models(kind, profile, sorted({s for p in pairs for s in p}), device, progress=False)
    options = align_options(profile, epochs=1, steps_per_epoch=args.steps)
    options.pop("lambdas")
    precisions = PRECISIONS if "autocast" in OPTIONS else {"fp32": None}
    out: dict = {name: {"s_per_step": [], "barrier": []} for name in precisions}
    for i, j in pairs:
        a, b = models[i], models[j]
        _, wm_seconds = timed_alignment(a, b, data, options, "weight_matching")
        for name, autocast in precisions.items():
            extra = {} if autocast is None else {"autocast": autocast}
            result, seconds = timed_alignment(a, b, data, {**options, **extra}, "learned_matching")
            out[name]["s_per_step"].append((seconds - wm_seconds) / args.steps)
            out[name]["barrier"].append(barrier(result.model_a, result.model_b, data.test).loss_barrier)
    return out


def summary(kind: str, r: dict) -> dict:
    fp32 = r["fp32"]
    line = f"{kind}: fp32 {statistics.mean(fp32['s_per_step']):.3f} s/step"
    record = {"fp32_s_per_step": statistics.mean(fp32["s_per_step"]), "fp32_barriers": fp32["barrier"]}
    if "bf16" in r:
        bf16 = r["bf16"]
        ratio = statistics.mean(fp32["s_per_step"]) / statistics.mean(bf16["s_per_step"])
        diffs = [y - x for x, y in zip(fp32["barrier"], bf16["barrier"], strict=True)]
        se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
        up = sum(d > 0 for d in diffs)
        line += (f" | bf16 {statistics.mean(bf16['s_per_step']):.3f} s/step ({ratio:.2f}x) | barrier fp32 "
                 f"{statistics.mean(fp32['barrier']):.4f}, bf16 {statistics.mean(bf16['barrier']):.4f}, "
                 f"bf16 − fp32 {statistics.mean(diffs):+.4f} ± {se:.4f} ({up}/{len(diffs)} pairs higher)")
        record |= {"bf16_s_per_step": statistics.mean(bf16["s_per_step"]), "ratio": round(ratio, 3),
                   "bf16_barriers": bf16["barrier"], "barrier_diff_mean": statistics.mean(diffs),
                   "barrier_diff_se": se, "pairs_higher": up}
    print(line, flush=True)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--kinds", default="gpt2", help="comma-separated: vit, gpt2")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, help="also write the JSON record here (the book shows bench/results/)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"cpu {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"
    record = {"bench": "align", "device": name, "torch": torch.__version__, "commit": git_commit(),
              "profile": args.profile, "pairs": args.pairs, "steps": args.steps, "load_average": os.getloadavg()}
    for kind in args.kinds.split(","):
        record[kind] = summary(kind, run(kind, args, device))
    record["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(record))
    if args.out:
        write_record(args.out, record)


if __name__ == "__main__":
    main()
