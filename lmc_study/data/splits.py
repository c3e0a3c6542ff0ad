"""The splits every number of the study uses: images held out for validation, seeded subsets."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ..profiles import Profile
from .images import ImageDataset, load_image_dataset


class ImageSplits(NamedTuple):
    """The three image sets every ViT number uses."""

    train: ImageDataset  # what models are trained on (and alignment learns from)
    val: ImageDataset  # held out of the train split: model selection and every tuned value
    test: ImageDataset | None  # the profile's evaluation subset: the book's barriers and accuracies


def image_splits(profile: Profile, *, with_test: bool = True) -> ImageSplits:
    """The profile's image splits: ``vit.val_images`` held out of the train split (stratified,
    seed 1), the training subset drawn from the rest (seed 0), the test subset (seed 0).
    ``with_test=False``: test is None and the test file is not read (for code that tunes)."""
    r = profile.vit
    train, val = load_image_dataset(r.dataset, "train").split_off(r.val_images, seed=1)
    if r.train_subset is not None:
        train = train.subset(r.train_subset, seed=0)  # the same images for every model seed
    if not with_test:
        return ImageSplits(train, val, None)
    test = load_image_dataset(r.dataset, "test")
    if profile.eval.test_images is not None:
        test = test.subset(profile.eval.test_images, seed=0)
    return ImageSplits(train, val, test)


def seeded_subset(blocks: Tensor, n: int | None) -> Tensor:
    """``n`` blocks drawn at random over the whole split, the same for every model seed."""
    if n is None or n >= len(blocks):
        return blocks
    return blocks[torch.randperm(len(blocks), generator=torch.Generator().manual_seed(0))[:n]]
