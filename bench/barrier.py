"""Barrier engine throughput: lmc_core.barrier (its engine, lmc_core.engine) against a naive per-λ loop, same models and data.

    python bench/barrier.py --device cpu --batches 2 --batch-size 32
    python bench/barrier.py --device cuda --batches 20 --batch-size 128

Models at the paper's sizes (SPEC Table 3) with RANDOM weights: timing and agreement only, the
barrier values themselves mean nothing. ViT: embed 256, depth 6, heads 8, MLP 512, patch 4,
28×28×1, 10 classes. GPT-2: 6 layers, 4 heads, width 256, n_inner 1024, context 256, vocab 50257,
untied head. Data: random images / token blocks, already on the device.

Two paths, each against the loop a user would write without the engine, same numbers:

- Vanilla (raw parameters interpolated). "Naive": for each λ, copy.deepcopy(model A),
  load_state_dict of lerp(θ_B, θ_A, λ), a plain model forward per batch and the textbook
  cross-entropy (language models: the logits shifted by one position).
- Canonical (canonical parameters interpolated, as after alignment). "Naive": for each λ,
  `interpolate(ca, cb, λ)` (a CanonicalTransformer) and its forward per batch.

"Engine" is `barrier(...)` with the strategy it picks itself (`auto`: on CPU one point at a
time, the raw model's own forward for vanilla, factored circuits for canonical; on CUDA one
ensemble pass per batch), then each strategy forced: "ensemble" (every λ one ensemble member)
and "ensemble, dense" (the same without the exact low-rank circuit factors, to show what the
factors buy). The engine runs in bf16 autocast on CUDA unless --fp32. Each method is warmed up
on the first batch first, then all are timed round robin ``--repeats`` times and the best time
of each is kept; CUDA is synchronised around every timing. Prints seconds, speed-ups
against the naive loop of the same path, the largest |Δ loss| against it along the whole path,
and one JSON line with the device, torch version, git commit, the machine's load average and
the peak memory.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from records import git_commit, peak_rss_mib, write_record  # noqa: E402
from timm.models.vision_transformer import VisionTransformer  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from lmc_core.adapters import canonicalize  # noqa: E402
from lmc_core.canonical import CanonicalTransformer  # noqa: E402
from lmc_core.engine import pick_strategy  # noqa: E402
from lmc_core.interpolation import barrier, interpolate, lambda_grid  # noqa: E402
from lmc_core.metrics import model_logits  # noqa: E402

Batches = list[tuple[Tensor, Tensor | None]]
barrier_module = importlib.import_module("lmc_core.engine")  # the barrier engine's strategies


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
    """Mean loss at each λ, one interpolated model at a time, float32, plain forward. Raw models:
    a deep copy with lerped weights; canonical ones: `interpolate`, a CanonicalTransformer."""
    sa, sb = model_a.state_dict(), model_b.state_dict()
    losses = []
    for lam in grid:
        if isinstance(model_a, CanonicalTransformer):
            model = interpolate(model_a, model_b, lam)
        else:
            model = copy.deepcopy(model_a)
            model.load_state_dict({k: torch.lerp(sb[k], v, lam) if v.is_floating_point() else v
                                   for k, v in sa.items()})
        model.eval()
        total, count = 0.0, 0
        for inputs, targets in data:
            logits = model_logits(model, inputs)
            if targets is None:  # the textbook shift: position t predicts token t + 1
                logits, targets = logits[:, :-1], inputs[:, 1:]
            logits, targets = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
            total += F.cross_entropy(logits, targets, reduction="sum").item()
            count += targets.numel()
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


PATHS = ("vanilla", "canonical")
ENGINES = ("engine", "ensemble", "ensemble_dense")


def run(kind: str, args: argparse.Namespace, device: torch.device) -> dict:
    """{path: {method: {seconds, losses, speedup, max_abs_dloss}}} for both paths."""
    a, b = (build(kind, seed).to(device).eval() for seed in (0, 1))
    ends = {"vanilla": (a, b), "canonical": (canonicalize(a), canonicalize(b))}
    data = make_data(kind, args.batches, args.batch_size, device)
    grid = lambda_grid(args.lambdas)
    autocast = False if args.fp32 else None
    out: dict = {}
    for path, (x, y) in ends.items():
        methods = {
            "naive": lambda d, g, x=x, y=y: naive(x, y, d, g),
            "engine": lambda d, g, x=x, y=y: barrier(x, y, d, g, autocast=autocast).losses,
            "ensemble": lambda d, g, x=x, y=y: barrier(x, y, d, g, autocast=autocast, strategy="ensemble").losses,
            "ensemble_dense": lambda d, g, x=x, y=y: dense_circuits(
                lambda: barrier(x, y, d, g, autocast=autocast, strategy="ensemble").losses),
        }
        for fn in methods.values():
            fn(data[:1], [0.0, 1.0])  # warm-up: every code path once
        # Round robin, best of --repeats: a drift of the machine's speed hits every method alike.
        runs: dict[str, list[float]] = {name: [] for name in methods}
        out[path] = {}
        for _ in range(args.repeats):
            for name, fn in methods.items():
                losses, seconds = timed(lambda fn=fn: fn(data, grid), device)
                runs[name].append(round(seconds, 3))
                out[path][name] = {"losses": losses}
        for name, times in runs.items():
            out[path][name] |= {"seconds": min(times), "runs": times}
        ref = out[path]["naive"]
        for name in ENGINES:
            m = out[path][name]
            m["speedup"] = round(ref["seconds"] / m["seconds"], 3)
            m["max_abs_dloss"] = max(abs(p - q) for p, q in zip(m["losses"], ref["losses"], strict=True))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (cuda if available)")
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lambdas", type=int, default=11)
    parser.add_argument("--repeats", type=int, default=3, help="timings per method (round robin; the best is kept)")
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
        results[kind] = {path: {k: {f: v for f, v in m.items() if f != "losses"} for k, m in methods.items()}
                         for path, methods in r.items()}
        for path in PATHS:
            cells = " | ".join(f"{name} {r[path][name]['seconds']:.2f} s ({r[path][name]['speedup']:.2f}x, "
                               f"max |Δ loss| {r[path][name]['max_abs_dloss']:.1e})" for name in ENGINES)
            print(f"{kind} {path}: naive {r[path]['naive']['seconds']:.2f} s | {cells}  "
                  f"[engine {precision}, naive fp32]", flush=True)
    record = {
        "bench": "barrier", "device": device_name(device), "torch": torch.__version__, "commit": git_commit(),
        "batches": args.batches, "batch_size": args.batch_size, "lambdas": args.lambdas, "repeats": args.repeats,
        "engine_precision": precision, "engine_strategy": pick_strategy("auto", device), "weights": "random", "load_average": os.getloadavg(),
        "peak_rss_mib": peak_rss_mib(), "results": results,
    }
    print(json.dumps(record))
    if args.out:
        write_record(args.out, record)


if __name__ == "__main__":
    main()
