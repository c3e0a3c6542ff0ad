"""Barrier engine throughput: lmc_core.barrier against a naive per-λ loop, same models and data.

    python bench/barrier.py --device cpu --batches 2 --batch-size 32
    python bench/barrier.py --device cuda --batches 20 --batch-size 128

Models at the paper's sizes (SPEC Table 3) with RANDOM weights: timing and agreement only, the
barrier values themselves mean nothing. ViT: embed 256, depth 6, heads 8, MLP 512, patch 4,
28×28×1, 10 classes. GPT-2: 6 layers, 4 heads, width 256, n_inner 1024, context 256, vocab 50257,
untied head. Data: random images / token blocks, already on the device.

"Naive": for each λ, copy.deepcopy(model A), load_state_dict of lerp(θ_B, θ_A, λ), float32,
a plain model forward per batch. "Engine vanilla": `barrier(raw A, raw B)` (interpolate raw,
canonicalise each λ, one ensemble pass per batch). "Engine canonical": `barrier` on the
canonical forms (canonicalised before timing, as aligned models are). Both engine runs use the
exact low-rank factors of the attention circuits; the "dense circuits" runs switch them off
(full (d+1)-wide circuits), to show what the factors buy. The engine runs in bf16
autocast on CUDA unless --fp32. Each method is warmed up on the first batch first; CUDA is
synchronised around every timing. Prints seconds, speed-ups, the largest |Δ loss| against the
naive loop (vanilla: over the whole path, which is the same path; canonical: at the two ends
only, since interpolating canonical parameters is a different path), and one JSON line with
the device, torch version, git commit and the machine's load average.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import os
import platform
import resource
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from timm.models.vision_transformer import VisionTransformer  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from lmc_core.adapters import canonicalize  # noqa: E402
from lmc_core.barrier import barrier, lambda_grid  # noqa: E402
from lmc_core.metrics import loss_and_correct, model_logits  # noqa: E402

Batches = list[tuple[Tensor, Tensor | None]]
barrier_module = importlib.import_module("lmc_core.barrier")  # the module (lmc_core.barrier is the function)


def build(kind: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    if kind == "vit":
        return VisionTransformer(img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=256, depth=6,
                                 num_heads=8, mlp_ratio=2.0, pre_norm=False, init_values=None)
    config = GPT2Config(vocab_size=50257, n_positions=256, n_embd=256, n_layer=6, n_head=4, n_inner=1024,
                        tie_word_embeddings=False, use_cache=False)
    return GPT2LMHeadModel(config)


def make_data(kind: str, batches: int, batch_size: int, device: torch.device) -> Batches:
    g = torch.Generator().manual_seed(0)
    if kind == "vit":
        return [(torch.randn(batch_size, 1, 28, 28, generator=g).to(device),
                 torch.randint(0, 10, (batch_size,), generator=g).to(device)) for _ in range(batches)]
    return [(torch.randint(0, 50257, (batch_size, 256), generator=g).to(device), None) for _ in range(batches)]


@torch.no_grad()
def naive(model_a: nn.Module, model_b: nn.Module, data: Batches, grid: list[float]) -> list[float]:
    """Mean loss at each λ, one interpolated model at a time, float32, plain forward."""
    sa, sb = model_a.state_dict(), model_b.state_dict()
    losses = []
    for lam in grid:
        model = copy.deepcopy(model_a)
        model.load_state_dict({k: torch.lerp(sb[k], v, lam) if v.is_floating_point() else v for k, v in sa.items()})
        model.eval()
        total, count = 0.0, 0
        for inputs, targets in data:
            loss, _, n = loss_and_correct(model_logits(model, inputs), inputs, targets)
            total += loss.item()
            count += n
        losses.append(total / count)
        del model
    return losses


def timed(fn: Callable[[], list[float]], device: torch.device) -> tuple[list[float], float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - start


def run(kind: str, args: argparse.Namespace, device: torch.device) -> dict:
    a, b = (build(kind, seed).to(device).eval() for seed in (0, 1))
    ca, cb = canonicalize(a), canonicalize(b)
    data = make_data(kind, args.batches, args.batch_size, device)
    grid = lambda_grid(args.lambdas)
    autocast = False if args.fp32 else None
    methods = {
        "naive": lambda d, g: naive(a, b, d, g),
        "vanilla": lambda d, g: barrier(a, b, d, g, autocast=autocast).losses,
        "canonical": lambda d, g: barrier(ca, cb, d, g, autocast=autocast).losses,
        "vanilla_dense": lambda d, g: dense_circuits(lambda: barrier(a, b, d, g, autocast=autocast).losses),
        "canonical_dense": lambda d, g: dense_circuits(lambda: barrier(ca, cb, d, g, autocast=autocast).losses),
    }
    out: dict = {}
    for name, fn in methods.items():
        fn(data[:1], [0.0, 1.0])  # warm-up: every code path once
        losses, seconds = timed(lambda fn=fn: fn(data, grid), device)
        out[name] = {"seconds": round(seconds, 3), "losses": losses}
    ref = out["naive"]["losses"]
    ends = [grid.index(0.0), grid.index(1.0)]
    for name in ("vanilla", "canonical", "vanilla_dense", "canonical_dense"):
        losses = out[name]["losses"]
        out[name]["speedup"] = round(out["naive"]["seconds"] / out[name]["seconds"], 3)
        out[name]["max_abs_dloss_ends"] = max(abs(losses[i] - ref[i]) for i in ends)
    # The vanilla path is the naive path; the canonical path is another path (SPEC section 1).
    for name in ("vanilla", "vanilla_dense"):
        out[name]["max_abs_dloss_path"] = max(abs(x - y) for x, y in zip(out[name]["losses"], ref, strict=True))
    out["canonical"]["max_abs_dloss_vs_dense"] = max(
        abs(x - y) for x, y in zip(out["canonical"]["losses"], out["canonical_dense"]["losses"], strict=True))
    return out


def dense_circuits(fn: Callable[[], list[float]]) -> list[float]:
    """`fn` with the engine's low-rank circuit factors switched off (dense (d+1)-wide circuits)."""
    saved = barrier_module.factor_circuits
    barrier_module.factor_circuits = lambda *args, **kwargs: None
    try:
        return fn()
    finally:
        barrier_module.factor_circuits = saved


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def peak_rss_mib() -> float:
    """The process's peak resident memory so far (Linux reports ru_maxrss in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def write_record(path: Path, record: dict) -> None:
    """Atomically: a half-written record never replaces a good one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def git_commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True,
                                       stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (cuda if available)")
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lambdas", type=int, default=11)
    parser.add_argument("--models", default="vit,gpt2", help="comma-separated: vit, gpt2")
    parser.add_argument("--fp32", action="store_true", help="engine without bf16 autocast on CUDA")
    parser.add_argument("--out", type=Path, help="also write the JSON record here (the book shows bench/results/)")
    args = parser.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    precision = "fp32" if device.type == "cpu" or args.fp32 else "bf16 autocast"
    results = {}
    for kind in args.models.split(","):
        r = run(kind, args, device)
        results[kind] = {k: {f: v for f, v in m.items() if f != "losses"} for k, m in r.items()}
        v, c, vd, cd = r["vanilla"], r["canonical"], r["vanilla_dense"], r["canonical_dense"]
        print(f"{kind}: naive {r['naive']['seconds']:.2f} s | engine vanilla {v['seconds']:.2f} s "
              f"({v['speedup']:.2f}x, max |Δ loss| path {v['max_abs_dloss_path']:.1e}) | engine canonical "
              f"{c['seconds']:.2f} s ({c['speedup']:.2f}x, max |Δ loss| ends {c['max_abs_dloss_ends']:.1e}, "
              f"vs dense {c['max_abs_dloss_vs_dense']:.1e}) | dense circuits: vanilla {vd['seconds']:.2f} s "
              f"({vd['speedup']:.2f}x), canonical {cd['seconds']:.2f} s ({cd['speedup']:.2f}x)  "
              f"[engine {precision}, naive fp32]", flush=True)
    record = {
        "bench": "barrier", "device": device_name(device), "torch": torch.__version__, "commit": git_commit(),
        "batches": args.batches, "batch_size": args.batch_size, "lambdas": args.lambdas,
        "engine_precision": precision, "weights": "random", "load_average": os.getloadavg(),
        "peak_rss_mib": peak_rss_mib(), "results": results,
    }
    print(json.dumps(record))
    if args.out:
        write_record(args.out, record)


if __name__ == "__main__":
    main()
