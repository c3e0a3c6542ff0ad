"""Training throughput: our trainer against a plain float32 PyTorch loop, same model and batch;
with ``--seeds M``, M seeds one after another against the same M seeds at once.

    python bench/train.py --profile smoke --device cpu --steps 30
    python bench/train.py --profile full --device cuda --steps 100
    python bench/train.py --profile smoke,cpu --device cpu --seeds 3
    python bench/train.py --profile full --device cuda --seeds 6 --steps 50

"Ours" is lmc_study.train.train_model run for two short epochs of ``--steps`` steps (the second,
warm epoch is reported: on CUDA the first pays for torch.compile). "Plain" is the textbook loop:
a DataLoader over a TensorDataset of normalised tensors in host memory, each batch copied to the
device, float32, no augmentation, the same AdamW. Prints images/s (ViT), tokens/s (GPT-2), the
ratio, and one JSON line with the device, torch version and git commit.

``--seeds M`` (M > 1) measures, for each profile of ``--profile a,b``, seeds 0..M-1 trained one
by one (train_model, M runs) against the same seeds at once (train_models(at_once=True), one
stacked run), both for two epochs of ``--steps`` steps with only the warm second epoch timed:
summed items/s of the M models, their ratio, and the peak memory of each (peak RSS on CPU,
reset between the two with /proc/self/clear_refs; torch.cuda.max_memory_allocated on CUDA).
At once is not compiled; one by one compiles when the recipe says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from records import git_commit, peak_rss_mib, write_record
from torch.utils.data import DataLoader, TensorDataset

from lmc_core.metrics import model_logits
from lmc_study.data import load_image_dataset, load_token_dataset
from lmc_study.data.splits import image_splits
from lmc_study.models import build_model
from lmc_study.profiles import Profile, get_profile, resolve_device
from lmc_study.train import train_model, train_models


def short(kind: str, profile: Profile, steps: int) -> Profile:
    """``profile`` cut to two epochs of ``steps`` training steps and small validation/test sets
    (they are not timed)."""
    if kind == "vit":
        vit = replace(profile.vit, train_subset=steps * profile.vit.batch_size, epochs=2,
                      val_images=min(profile.vit.val_images, 256))
        return replace(profile, vit=vit, eval=replace(profile.eval, test_images=256))
    gpt2 = replace(profile.gpt2, train_blocks=steps * profile.gpt2.batch_size, val_blocks=1,
                   max_epochs=2, patience=0)
    return replace(profile, gpt2=gpt2, eval=replace(profile.eval, test_blocks=8))


def ours(kind: str, profile: Profile, steps: int, device: torch.device) -> float:
    """Items per second of train_model's second epoch of ``steps`` steps."""
    model = train_model(kind, short(kind, profile, steps), seed=0, device=device, progress=False)
    return model.lmc_meta["history"][-1]["items_per_s"]


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: "5" resets the process's peak RSS (VmHWM) to its current RSS
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # then the peak is the process's since it started


def peak_memory_mib(device: torch.device) -> float:
    """CUDA: peak allocated by torch since the reset. CPU: peak RSS since the reset."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        status = Path("/proc/self/status").read_text().splitlines()
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def seeds_one_by_one(kind: str, profile: Profile, seeds: int, steps: int,
                     device: torch.device) -> tuple[float, float]:
    """(items/s, peak MiB) of seeds 0..seeds-1 trained one after another (warm epochs only)."""
    profile = short(kind, profile, steps)
    if kind == "vit":
        image_splits(profile)  # the raw images stay cached: load them outside both peaks
    reset_peak_memory(device)
    # Every seed's warm epoch has the same items: the M epochs' rate is M / sum(1 / rate).
    inverse = 0.0
    for seed in range(seeds):
        model = train_model(kind, profile, seed, device=device, progress=False)
        inverse += 1.0 / model.lmc_meta["history"][-1]["items_per_s"]
        del model
    return seeds / inverse, peak_memory_mib(device)


def seeds_at_once(kind: str, profile: Profile, seeds: int, steps: int,
                  device: torch.device) -> tuple[float, float]:
    """(items/s, peak MiB) of seeds 0..seeds-1 trained as one stack (warm epoch only)."""
    reset_peak_memory(device)
    models = train_models(kind, short(kind, profile, steps), range(seeds), at_once=True,
                          device=device, progress=False)
    # Each record is one seed's items over the stack's epoch time: the stack's rate is the sum.
    rate = sum(m.lmc_meta["history"][-1]["items_per_s"] for m in models)
    return rate, peak_memory_mib(device)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smoke", help="a profile or several: smoke,cpu")
    parser.add_argument("--device", default=None, help="cpu, cuda or auto (default: profile's)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    parser.add_argument("--kind", choices=["vit", "gpt2", "both"], default="both")
    parser.add_argument("--seeds", type=int, default=1,
                        help="M > 1: M seeds one by one against M seeds at once")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, help="also write the JSON record here (the book shows bench/results/)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)

    names = args.profile.split(",")
    profiles = {n: get_profile(n, {"device": args.device} if args.device else None) for n in names}
    device = resolve_device(profiles[names[0]])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"
    # The load average says whether other work shared the CPU (CPU timings mean little then).
    result = {"device": name, "torch": torch.__version__, "git": git_commit(),
              "profile": args.profile, "steps": args.steps, "load_before": os.getloadavg()[0]}
    kinds = ["vit", "gpt2"] if args.kind == "both" else [args.kind]
    if args.seeds > 1:
        result.update(bench="train-seeds", seeds=args.seeds, results={})
        memory = "peak allocated" if device.type == "cuda" else "peak RSS"
        for pname, profile in profiles.items():
            for kind in kinds:
                unit = "images/s" if kind == "vit" else "tokens/s"
                seq, seq_mib = seeds_one_by_one(kind, profile, args.seeds, args.steps, device)
                stack, stack_mib = seeds_at_once(kind, profile, args.seeds, args.steps, device)
                print(f"{pname:6s} {kind:5s} {args.seeds} seeds: one by one {seq:12,.0f} {unit} "
                      f"({memory} {seq_mib:,.0f} MiB)   at once {stack:12,.0f} {unit} "
                      f"({stack_mib:,.0f} MiB)   ratio {stack / seq:5.2f}x")
                result["results"].setdefault(pname, {})[kind] = {
                    "unit": unit, "one_by_one": round(seq, 1), "at_once": round(stack, 1),
                    "ratio": round(stack / seq, 3), "memory": memory,
                    "one_by_one_peak_mib": round(seq_mib, 1),
                    "at_once_peak_mib": round(stack_mib, 1)}
    else:
        for pname, profile in profiles.items():
            record = result if len(profiles) == 1 else result.setdefault(pname, {})
            for kind in kinds:
                unit = "images/s" if kind == "vit" else "tokens/s"
                a, b = ours(kind, profile, args.steps, device), plain(kind, profile, args.steps, device)
                print(f"{pname + ' ' if len(profiles) > 1 else ''}{kind:5s} ours {a:12,.0f} {unit}   "
                      f"plain fp32 DataLoader {b:12,.0f} {unit}   ratio {a / b:5.2f}x")
                record[kind] = {"unit": unit, "ours": round(a, 1), "plain": round(b, 1),
                                "ratio": round(a / b, 3)}
    result["load_after"] = os.getloadavg()[0]
    result["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(result))
    if args.out:
        write_record(args.out, result)


if __name__ == "__main__":
    main()
