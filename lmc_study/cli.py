"""The study's command line, `python -m lmc_study`: train a model of a profile, as the book does.

    python -m lmc_study train gpt2 --profile full --seed 0 --out DIR
    torchrun --nproc_per_node 8 -m lmc_study train gpt2 --profile full --seed 0 --out DIR   # N GPUs

The checkpoint it writes is the library's format (`lmc_core.cli`), with the tokenizer beside a
GPT-2, so `lmc align` and `lmc barrier` read it as they read any other.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lmc_core.cli import CLIError, new_parser, run, save_checkpoint
from lmc_core.outputs import check_output_dir, staged_output_dir

if TYPE_CHECKING:
    from torch import nn


def cmd_train(args: argparse.Namespace) -> dict | None:
    from lmc_core import distributed
    from lmc_core.cache import CheckpointCache

    from .profiles import get_profile
    from .train import train_model

    overrides = dict(parse_override(item) for item in args.set)
    profile = get_profile(args.profile, overrides)  # a bad --set fails here, before anything runs
    check_output_dir(args.out, "python -m lmc_study train")
    device = distributed.setup()
    try:
        cache = CheckpointCache(args.cache) if args.cache else None
        model = train_model(args.kind, profile, args.seed, device=device, cache=cache,
                            progress=not args.quiet)
        if not distributed.is_main():
            return None
        with staged_output_dir(args.out, "python -m lmc_study train") as stage:
            _save_trained(model, args.kind, profile, stage)
        return {k: v for k, v in model.lmc_meta.items() if k != "history"} | {"out": str(args.out)}
    finally:
        distributed.teardown()


def parse_override(item: str) -> tuple[str, object]:
    """KEY=VALUE: the value as JSON when it parses (numbers, lists, true), else the string."""
    key, sep, value = item.partition("=")
    if not sep:
        raise CLIError(f"--set {item!r}: expected KEY=VALUE, e.g. gpt2.n_embd=512")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _save_trained(model: nn.Module, kind: str, profile, out: Path) -> None:
    if kind == "gpt2":
        from .data.tokenization import get_tokenizer

        save_checkpoint(model.cpu(), out)
        get_tokenizer(profile.gpt2.tokenizer, profile.gpt2.corpus).backend.save(str(out / "tokenizer.json"))
        return
    from .data import load_image_dataset

    r, build = profile.vit, model.lmc_meta["build"]
    data = load_image_dataset(r.dataset, "train")
    args = {"img_size": build["img_size"], "patch_size": r.patch_size, "in_chans": build["in_chans"],
            "num_classes": build["num_classes"], "global_pool": r.global_pool, "embed_dim": r.embed_dim,
            "depth": r.depth, "num_heads": r.num_heads, "mlp_ratio": r.mlp_dim / r.embed_dim,
            "qkv_bias": r.qkv_bias, "class_token": r.class_token}
    save_checkpoint(model.cpu(), out, vit_config={"architecture": "vit", "model_args": args,
                                                  "mean": list(data.mean), "std": list(data.std)})


def build_parser() -> argparse.ArgumentParser:
    parser, commands = new_parser("python -m lmc_study", "The study's models: train one model of a profile "
                                  "and save it as a checkpoint `lmc align` / `lmc barrier` read.")
    p = commands.add_parser("train", help="train one model of a profile (runs under torchrun on several GPUs)",
                            description="Train the vit or gpt2 model of a profile for one seed and save it as a "
                            "checkpoint directory. Under `torchrun --nproc_per_node N` every process trains on a "
                            "slice of every batch (DistributedDataParallel; NCCL on GPUs, gloo on CPUs).")
    p.add_argument("kind", choices=("vit", "gpt2"), help="vit or gpt2")
    p.add_argument("--profile", default="full", help="smoke, cpu, full or paper (default full)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a profile field, e.g. --set gpt2.n_embd=512 (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="model seed (default 0)")
    p.add_argument("--out", required=True, help="directory for the trained checkpoint")
    p.add_argument("--cache", help="checkpoint cache directory (resumes an interrupted run)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=cmd_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The study's command line; returns the exit status (0 ok, 1 bad input, 2 bad usage)."""
    return run(build_parser(), argv)
