"""Training throughput: our trainer against a plain float32 PyTorch loop, same model and batch.

    python bench/train.py --profile smoke --device cpu --steps 30
    python bench/train.py --profile full --device cuda --steps 100

"Ours" is lmc_core.train.train_model run for two short epochs of ``--steps`` steps (the second,
warm epoch is reported: on CUDA the first pays for torch.compile). "Plain" is the textbook loop:
a DataLoader over a TensorDataset of normalised tensors in host memory, each batch copied to the
device, float32, no augmentation, the same AdamW. Prints images/s (ViT), tokens/s (GPT-2), the
ratio, and one JSON line with the device, torch version and git commit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from lmc_core.data import load_image_dataset, load_token_dataset
from lmc_core.metrics import model_logits
from lmc_core.models import build_model
from lmc_core.profiles import Profile, get_profile, resolve_device
from lmc_core.train import train_model


def ours(kind: str, profile: Profile, steps: int, device: torch.device) -> float:
    """Items per second of train_model's second epoch of ``steps`` steps."""
    if kind == "vit":
        vit = replace(profile.vit, train_subset=steps * profile.vit.batch_size, epochs=2)
        profile = replace(profile, vit=vit)
    else:
        gpt2 = replace(profile.gpt2, train_blocks=steps * profile.gpt2.batch_size, val_blocks=1,
                       max_epochs=2, patience=0)
        profile = replace(profile, gpt2=gpt2)
    model = train_model(kind, profile, seed=0, device=device, progress=False)
    return model.lmc_meta["history"][-1]["items_per_s"]


def plain(kind: str, profile: Profile, steps: int, device: torch.device) -> float:
    """Items per second of a plain float32 loop with a DataLoader (after 3 warm-up steps)."""
    torch.manual_seed(0)
    if kind == "vit":
        r = profile.vit
        ds = load_image_dataset(r.dataset, "train")
        mean = torch.tensor(ds.mean).view(1, -1, 1, 1)
        std = torch.tensor(ds.std).view(1, -1, 1, 1)
        x = (ds.images[: (steps + 3) * r.batch_size].float() / 255 - mean) / std
        data = TensorDataset(x, ds.labels[: len(x)])
        model = build_model("vit", profile, num_classes=ds.num_classes, in_chans=ds.in_chans,
                            img_size=ds.img_size)
        batch_size, lr = r.batch_size, r.lr
    else:
        r = profile.gpt2
        tokens = load_token_dataset(r.corpus, r.tokenizer)
        blocks = tokens.blocks("train", r.block_size)[: (steps + 3) * r.batch_size]
        data = TensorDataset(blocks)
        model = build_model("gpt2", profile, vocab_size=tokens.vocab_size)
        batch_size, lr = r.batch_size, r.lr
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, drop_last=True)
    items = 0
    for step, batch in enumerate(loader):
        if step == 3:  # warm-up excluded
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0, items = time.perf_counter(), 0
        inputs = batch[0].to(device)
        logits = model_logits(model, inputs)
        if kind == "vit":
            loss = F.cross_entropy(logits, batch[1].to(device))
            items += inputs.shape[0]
        else:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), inputs[:, 1:].flatten())
            items += inputs.shape[0] * (inputs.shape[1] - 1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return items / (time.perf_counter() - t0)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--device", default=None, help="cpu, cuda or auto (default: profile's)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    parser.add_argument("--kind", choices=["vit", "gpt2", "both"], default="both")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, help="also write the JSON record here (the book shows bench/results/)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)

    profile = get_profile(args.profile, {"device": args.device} if args.device else None)
    device = resolve_device(profile)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"
    # The load average says whether other work shared the CPU (CPU timings mean little then).
    result = {"device": name, "torch": torch.__version__, "git": git_commit(),
              "profile": args.profile, "steps": args.steps, "load_before": os.getloadavg()[0]}
    kinds = ["vit", "gpt2"] if args.kind == "both" else [args.kind]
    for kind in kinds:
        unit = "images/s" if kind == "vit" else "tokens/s"
        a, b = ours(kind, profile, args.steps, device), plain(kind, profile, args.steps, device)
        print(f"{kind:5s} ours {a:12,.0f} {unit}   plain fp32 DataLoader {b:12,.0f} {unit}   "
              f"ratio {a / b:5.2f}x")
        result[kind] = {"unit": unit, "ours": round(a, 1), "plain": round(b, 1),
                        "ratio": round(a / b, 3)}
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result))
    if args.out:  # atomically: a half-written record never replaces a good one
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(f".{args.out.name}.tmp")
        tmp.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
