"""Batches of images on a device, normalised and optionally augmented.

Augmentation runs batched on the tensors' device: random crop with zero padding, horizontal flip
and, for colour images only, colour jitter.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .images import ImageDataset

# RGB -> YIQ (NTSC). Hue jitter rotates the (I, Q) chroma plane: a cheap, linear stand-in for
# torchvision's HSV hue shift (same intent, slightly different colours at large shifts).
_RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114],
                         [0.595716, -0.274453, -0.321263],
                         [0.211456, -0.522591, 0.311135]], dtype=torch.float64)
_YIQ2RGB = torch.linalg.inv(_RGB2YIQ)
_GRAY = (0.299, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


def _gray(x: Tensor) -> Tensor:
    """(B, 1, H, W) luma of RGB images in [0, 1]."""
    w = torch.tensor(_GRAY, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def color_jitter(x: Tensor, generator: torch.Generator, brightness: float = 0.4,
                 contrast: float = 0.4, saturation: float = 0.4, hue: float = 0.1) -> Tensor:
    """Batched colour jitter of RGB float images in [0, 1], one random draw per image.

    Factors are uniform in [1 - s, 1 + s] (hue shift in [-hue, hue] turns), as torchvision's
    ColorJitter, but applied in a fixed order (brightness, contrast, saturation, hue) instead
    of a random one, and with hue approximated by a rotation in YIQ space (see _RGB2YIQ).
    """
    b, dev = x.shape[0], x.device

    def factor(s: float) -> Tensor:
        u = torch.rand(b, 1, 1, 1, generator=generator, device=dev, dtype=x.dtype)
        return 1.0 + (2.0 * u - 1.0) * s

    x = (x * factor(brightness)).clamp_(0, 1)
    m = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - m) * factor(contrast) + m).clamp_(0, 1)
    g = _gray(x)
    x = ((x - g) * factor(saturation) + g).clamp_(0, 1)
    theta = (2 * torch.rand(b, generator=generator, device=dev, dtype=torch.float64) - 1) \
        * hue * 2 * math.pi
    cos, sin = torch.cos(theta), torch.sin(theta)
    rot = torch.zeros(b, 3, 3, dtype=torch.float64, device=dev)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
    mat = (_YIQ2RGB.to(dev) @ rot @ _RGB2YIQ.to(dev)).to(x.dtype)  # (B, 3, 3): one map per image
    return torch.einsum("bij,bjhw->bihw", mat, x).clamp_(0, 1)


def augment_batch(x: Tensor, generator: torch.Generator, pad: int = 2,
                  jitter: bool = False) -> Tensor:
    """Random crop (zero padding ``pad``), horizontal flip (p=0.5), optional colour jitter.

    ``x`` is uint8 (B, C, H, W) on any device; returns float32 in [0, 1] on that device. All
    random draws come from ``generator`` in a fixed order, so a seed fixes the batch.
    """
    b, c, h, w = x.shape
    dev = x.device
    if pad > 0:
        xp = F.pad(x, (pad, pad, pad, pad))  # zeros, as torchvision's RandomCrop(padding=pad)
        oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev)
        ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev)
        rows = oy[:, None] + torch.arange(h, device=dev)  # (B, H)
        cols = ox[:, None] + torch.arange(w, device=dev)  # (B, W)
        x = xp[torch.arange(b, device=dev)[:, None, None, None],
               torch.arange(c, device=dev)[None, :, None, None],
               rows[:, None, :, None], cols[:, None, None, :]]
    flip = torch.rand(b, generator=generator, device=dev) < 0.5
    x = torch.where(flip.view(b, 1, 1, 1), x.flip(3), x)
    xf = x.to(torch.float32).div_(255.0)
    if jitter:
        xf = color_jitter(xf, generator)
    return xf


class ImageBatches:
    """Re-iterable batches ``(x float32 normalised (B, C, H, W), y int64 (B,))`` on a device.

    The uint8 images move to ``device`` once (cached on the data set); every iteration starts
    from ``seed``, so iterating twice gives the same batches, and on CPU the same seed gives the
    same batches everywhere. Colour jitter is applied only to 3-channel images.
    """

    def __init__(self, dataset: ImageDataset, batch_size: int, *, device: str | torch.device = "cpu",
                 shuffle: bool = True, augment: bool = False, pad: int = 2, seed: int = 0,
                 drop_last: bool = False) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if pad < 0:
            raise ValueError(f"pad must be >= 0, got {pad}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.shuffle, self.augment, self.pad = shuffle, augment, pad
        self.seed, self.drop_last = seed, drop_last
        self._x, self._y = dataset.on_device(self.device)
        c = dataset.in_chans
        self._mean = torch.tensor(dataset.mean, dtype=torch.float32, device=self.device).view(1, c, 1, 1)
        self._std = torch.tensor(dataset.std, dtype=torch.float32, device=self.device).view(1, c, 1, 1)
        self._mean255, self._std255 = self._mean * 255.0, self._std * 255.0

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(self.dataset)
        g = torch.Generator(device=self.device)
        g.manual_seed(self.seed)
        order = (torch.randperm(n, generator=g, device=self.device) if self.shuffle
                 else torch.arange(n, device=self.device))
        jitter = self.dataset.in_chans == 3
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            x = self._x[idx]
            if self.augment:
                xf = augment_batch(x, g, pad=self.pad, jitter=jitter)
                xf.sub_(self._mean).div_(self._std)
            else:  # (x/255 - mean)/std folded into two in-place ops on the fresh float copy
                xf = x.to(torch.float32).sub_(self._mean255).div_(self._std255)
            yield xf, self._y[idx]


def image_batches(dataset: ImageDataset, batch_size: int, *, device: str | torch.device = "cpu",
                  shuffle: bool = True, augment: bool = False, pad: int = 2, seed: int = 0,
                  drop_last: bool = False) -> ImageBatches:
    """Re-iterable ``(x, y)`` batches of ``dataset`` on ``device``; see ImageBatches."""
    return ImageBatches(dataset, batch_size, device=device, shuffle=shuffle, augment=augment,
                        pad=pad, seed=seed, drop_last=drop_last)


def denormalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Undo the normalisation of a batch (for plots): back to [0, 1] pixel units."""
    c = x.shape[1]
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, c, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, c, 1, 1)
    return x * s + m
