"""Tokenised corpora (train/val/test id streams), fixed-length blocks, and their batches."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ._common import DataIntegrityError, atomic_savez, data_dir, sha256_text
from .text import load_text_corpus, text_splits
from .tokenization import get_tokenizer

TOKEN_SPLITS = ("train", "val", "test")


@dataclass(eq=False)
class TokenDataset:
    """A corpus encoded with one tokenizer: 1-D int64 id tensors for 90/5/5 contiguous splits."""

    train: Tensor = field(repr=False)
    val: Tensor = field(repr=False)
    test: Tensor = field(repr=False)
    vocab_size: int
    tokenizer_name: str
    corpus: str

    def __repr__(self) -> str:
        return (f"TokenDataset(corpus={self.corpus!r}, tokenizer={self.tokenizer_name!r}, "
                f"vocab_size={self.vocab_size}, tokens={len(self.train)}/{len(self.val)}/"
                f"{len(self.test)})")

    def split(self, split: str) -> Tensor:
        """The id stream of ``split`` ("train", "val" or "test")."""
        if split not in TOKEN_SPLITS:
            raise ValueError(f"unknown split {split!r}; valid: {', '.join(TOKEN_SPLITS)}")
        return getattr(self, split)

    def blocks(self, split: str, block_size: int) -> Tensor:
        """(n_blocks, block_size) int64: contiguous, non-overlapping blocks; the remainder is dropped."""
        if block_size <= 0:
            raise ValueError(f"block_size must be positive, got {block_size}")
        ids = self.split(split)
        n = len(ids) // block_size
        return ids[: n * block_size].view(n, block_size)


def token_cache_path(corpus: str, tokenizer: str, text_sha256: str, tok_sha256: str) -> Path:
    """Cache of encoded splits, keyed by corpus + tokenizer name and both their contents' hashes."""
    return data_dir() / "tokens" / f"{corpus}-{tokenizer}-{text_sha256[:12]}-{tok_sha256[:12]}.npz"


def load_token_dataset(corpus: str = "shakespeare", tokenizer: str = "gpt2") -> TokenDataset:
    """``corpus`` tokenised with ``tokenizer`` ("gpt2" or "bpe-N"), split 90/5/5 contiguously.

    The text is split first (text_splits, at line starts) and each split encoded on its own, so
    no token crosses a split boundary. Encoded arrays are cached as one .npz.
    """
    text = load_text_corpus(corpus)
    tok = get_tokenizer(tokenizer, corpus)
    path = token_cache_path(corpus, tokenizer, sha256_text(text), tok.fingerprint())
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            arrays = {s: z[s] for s in TOKEN_SPLITS}
            meta = json.loads(str(z["meta"]))
        if meta.get("vocab_size") != tok.vocab_size:
            raise DataIntegrityError(f"{path}: vocab size {meta.get('vocab_size')} != {tok.vocab_size}")
    else:
        dtype = np.uint16 if tok.vocab_size <= 1 << 16 else np.int32  # GPT-2 ids fit in uint16
        arrays = {s: np.asarray(tok.encode(t, progress=True), dtype=dtype)
                  for s, t in zip(TOKEN_SPLITS, text_splits(text), strict=True)}
        meta = {"corpus": corpus, "tokenizer": tokenizer, "vocab_size": tok.vocab_size,
                "chars": len(text)}
        atomic_savez(path, meta=np.array(json.dumps(meta)), **arrays)
    return TokenDataset(
        **{s: torch.from_numpy(arrays[s].astype(np.int64)) for s in TOKEN_SPLITS},
        vocab_size=tok.vocab_size, tokenizer_name=tokenizer, corpus=corpus,
    )


class TokenBatches:
    """Re-iterable batches ``(input_ids (B, T) int64, None)`` of token blocks on a device.

    Targets are None: the model predicts the next token of its own input, the consumer shifts.
    The blocks move to ``device`` once; each iteration restarts from ``seed``.
    """

    def __init__(self, blocks: Tensor, batch_size: int, *, device: str | torch.device = "cpu",
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False) -> None:
        if blocks.ndim != 2:
            raise ValueError(f"blocks must be (n_blocks, block_size), got {tuple(blocks.shape)}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.device = torch.device(device)
        self.blocks = blocks.to(self.device, torch.int64)
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last

    def __len__(self) -> int:
        n = self.blocks.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, None]]:
        n = self.blocks.shape[0]
        g = torch.Generator(device=self.device)
        g.manual_seed(self.seed)
        order = (torch.randperm(n, generator=g, device=self.device) if self.shuffle
                 else torch.arange(n, device=self.device))
        for i in range(len(self)):
            yield self.blocks[order[i * self.batch_size:(i + 1) * self.batch_size]], None


def token_batches(blocks: Tensor, batch_size: int, *, device: str | torch.device = "cpu",
                  shuffle: bool = True, seed: int = 0, drop_last: bool = False) -> TokenBatches:
    """Re-iterable ``(input_ids, None)`` batches of ``blocks``; see TokenBatches."""
    return TokenBatches(blocks, batch_size, device=device, shuffle=shuffle, seed=seed,
                        drop_last=drop_last)
