"""Machine unlearning: forget sets, the methods, and the attacks that tell whether they forgot.

A forget split cuts a training set in two: ``forget`` (to erase) and ``retain``. Two kinds:
``forget_set`` (random samples) and ``forget_class`` (every sample of one class). The gold
standard is ``retrain``: a model trained from scratch on the retained data (``fit``: the
trainer's recipe, only the training set changes). The approximate methods start from the
trained ("original") model:

- ``finetune``: Adam on retained data, ``length`` steps;
- ``gradient_ascent``: ``length`` epochs of Adam ascending the erased samples' cross-entropy;
- ``random_labels``: ``length`` epochs of Adam on the erased samples, each relabelled with a
  random wrong class; (each baseline's rate and length are chosen on validation by the study);
- ``manif_smc``: ManiF-SMC as its released script runs it (wwq5-code/ManiF @ 05c4e64,
  On_MNIST/26Mar25/MNIST_Normal_distribution.py): for each erased sample, the k retained
  samples most cosine-similar in the *original* model's L2-normalised latent
  (``create_unlearning_with_topk_loader``, lines 1559-1660); anchor c = the mean of their
  normalised latents, computed once, without gradient; positive = the nearest one. For every
  batch of 16 erased samples, the margin α = MSE(z_e, c) − MSE(z_p, c) is measured without
  gradient on a surrogate, the current model lerped at t = 0.5 with a *fresh* initialisation
  drawn for that batch (``connect_determined_alpha``, lines 1763-1775); the loss is
  0.1 · max(0, MSE(z_p, c) − MSE(z_e, c) + α + CE(logits of the positive, the *erased*
  sample's label)) (lines 1788-1812; MSE a mean over batch and dimensions, the model's latents
  unnormalised there), Adam 5e-4, one epoch;
- ``manif_smc_trained``: the surrogate of their rebuttal: a quadratic Bézier curve between the
  original and the current model (ends frozen) whose control point (started at their midpoint)
  takes one Adam step per batch on a retained batch at a random t ∈ (0, 1); α is read at t = 0.5.
  The released script does not train a surrogate; this is our reading of the rebuttal;
- ``manif_smc_positive_label``: the ablation of the one choice where our earlier version
  differed: the cross-entropy term scores the positive with its *own* label.

Metrics and attacks are in `unlearning_metrics`.

Data dispatch (``take``, ``batches``, ``features``) also covers GPT-2 token
blocks; training from scratch (``fit``), fresh initialisations and random labels are the ViT's.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn
from torch.func import functional_call
from transformers import GPT2LMHeadModel

from lmc_core import distributed
from lmc_core.metrics import autocast_context, evaluate, model_logits
from lmc_core.progress import progress_bar
from lmc_core.schedules import make_scheduler

from .data import ImageBatches, ImageDataset, TokenBatches, image_batches, token_batches
from .models import build_model
from .profiles import Profile, resolve_device
from .train import (
    _clone_state,
    _train_epoch,
    _train_loss,
    _vit_task,
    epoch_seed,
    param_groups,
)

BASELINES = ("finetune", "gradient_ascent", "random_labels")  # their rate and length are tuned
METHODS = ("retrain", *BASELINES, "manif_smc", "manif_smc_trained", "manif_smc_positive_label")
# The chapter's rows: the trained model before unlearning (trivial baseline), every method, and a
# second retrained model from another seed (the reference for the barrier to the retrained one).
MODELS = ("original", *METHODS, "retrain_other")
LABELS = {
    "original": "original (nothing forgotten)", "retrain": "retrain (gold standard)",
    "finetune": "fine-tune on retained", "gradient_ascent": "gradient ascent", "random_labels": "random labels",
    "manif_smc": "ManiF-SMC (as released)", "manif_smc_trained": "ManiF-SMC, trained surrogate",
    "manif_smc_positive_label": "ManiF-SMC, positive's own label (ablation)",
    "retrain_other": "retrain, other seed (reference)",
}
UNLEARN_VERSION = 2  # bump when a change here changes the weights a method produces (cache key)
RETRAIN_SEED = 1000  # seed s's retrained model has model seed s + RETRAIN_SEED (an init of its own)
OTHER_SEED = 2000  # and its reference, the second retrained model, seed s + OTHER_SEED
SURROGATE_SEED = 10_000  # batch b of seed s draws its fresh initialisation from seed SURROGATE_SEED·(s+1) + b


# -- forget sets ------------------------------------------------------------------------------------

def take(data: Any, index: Tensor) -> Any:
    """Rows ``index`` of a data set: an ImageDataset (images) or a tensor of token blocks."""
    if isinstance(data, ImageDataset):
        return data.rows(index)
    if isinstance(data, Tensor):
        return data[index]
    raise TypeError(f"cannot index {type(data).__name__}: pass an ImageDataset or a tensor of token blocks")


@dataclass
class ForgetSplit:
    """A training split cut in two: ``forget`` (to erase) and ``retain``, and their rows in it."""

    forget: Any
    retain: Any
    forget_index: Tensor
    retain_index: Tensor
    seed: int
    source: Tensor | None = None  # the split's source rows (an ImageDataset's), part of the cache key

    def fingerprint(self) -> str:
        """sha256 of the split's size, forget rows and source rows: the cache key of what is
        trained on it (two subsets of a data set with the same forget rows differ)."""
        size = len(self.forget_index) + len(self.retain_index)
        digest = hashlib.sha256(f"{size}:".encode() + self.forget_index.numpy().astype("<i8").tobytes())
        if self.source is not None:
            digest.update(self.source.numpy().astype("<i8").tobytes())
        return digest.hexdigest()


def _split(dataset: Any, forget: Tensor, seed: int) -> ForgetSplit:
    keep = torch.ones(len(dataset), dtype=torch.bool)
    keep[forget] = False
    retain = keep.nonzero().squeeze(1)
    source = dataset.source_index if isinstance(dataset, ImageDataset) else None
    return ForgetSplit(take(dataset, forget), take(dataset, retain), forget, retain, seed, source)


def forget_set(dataset: Any, n: int, seed: int) -> ForgetSplit:
    """``n`` random rows of ``dataset`` (seeded) to forget, the others retained; both sorted."""
    size = len(dataset)
    if not 1 <= n < size:
        raise ValueError(f"forget set size n = {n} must be between 1 and {size - 1}: the training split "
                         f"has {size} samples and the retained set cannot be empty")
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed))
    return _split(dataset, order[:n].sort().values, seed)


def forget_class(dataset: ImageDataset, cls: int, seed: int = 0) -> ForgetSplit:
    """Every image of class ``cls`` to forget, the other classes retained (``seed`` names the
    split's models; the rows do not depend on it)."""
    if not isinstance(dataset, ImageDataset):
        raise TypeError("class forgetting needs labelled images (an ImageDataset)")
    if not 0 <= cls < dataset.num_classes:
        raise ValueError(f"forget class {cls} is not a class of {dataset.name} (0..{dataset.num_classes - 1})")
    rows = (dataset.labels == cls).nonzero().squeeze(1)
    if not 0 < len(rows) < len(dataset):
        raise ValueError(f"class {cls} has {len(rows)} of {len(dataset)} images: nothing to forget or nothing left")
    return _split(dataset, rows, seed)


# -- data and representations -----------------------------------------------------------------------

def batches(data: Any, batch_size: int, device: torch.device, *, shuffle: bool = False,
            seed: int = 0) -> ImageBatches | TokenBatches:
    """Re-iterable (inputs, targets) batches of images, or (blocks, None) of token blocks."""
    if isinstance(data, ImageDataset):
        return image_batches(data, batch_size, device=device, shuffle=shuffle, seed=seed)
    return token_batches(data, batch_size, device=device, shuffle=shuffle, seed=seed)


def _all(data: Any, device: torch.device) -> tuple[Tensor, Tensor | None]:
    """The whole (small) data set as one batch, in order."""
    return next(iter(batches(data, len(data), device)))


def _stream(data: Any, batch_size: int, device: torch.device, seed: int, steps: int) -> Iterator:
    """``steps`` shuffled batches, a fresh seeded order on every pass over the data."""
    if len(data) == 0:
        raise ValueError("cannot draw training steps from an empty data set")
    done, epoch = 0, 0
    while done < steps:
        for batch in batches(data, batch_size, device, shuffle=True, seed=epoch_seed(seed, epoch)):
            if done == steps:
                return
            yield batch
            done += 1
        epoch += 1


def features(model: nn.Module, inputs: Tensor) -> tuple[Tensor, Tensor]:
    """(pooled representation, logits) in one forward pass: a timm ViT's pre-logits (the pooled
    token after the final norm), a GPT-2's last hidden states averaged over positions."""
    if isinstance(model, VisionTransformer):
        pooled = model.forward_head(model.forward_features(inputs), pre_logits=True)
        return pooled, model.head(pooled)
    if isinstance(model, GPT2LMHeadModel):
        hidden = model.transformer(input_ids=inputs).last_hidden_state
        return hidden.mean(dim=1), model.lm_head(hidden)
    raise TypeError(f"no pooled representation for {type(model).__name__}; "
                    "supported: timm VisionTransformer, HF GPT2LMHeadModel")


@torch.no_grad()
def embed(model: nn.Module, data: Any, batch_size: int, device: torch.device) -> Tensor:
    """Pooled representations (float32) of every item of ``data``, in order."""
    was_training = model.training
    model.eval()
    out = [features(model, x)[0].float() for x, _ in batches(data, batch_size, device)]
    model.train(was_training)
    return torch.cat(out)


def neighbours(z_forget: Tensor, z_retain: Tensor, k: int) -> Tensor:
    """(n_forget, k) rows of ``z_retain``: each erased sample's k most cosine-similar retained
    samples, the most similar first."""
    if not 1 <= k <= len(z_retain):
        raise ValueError(f"k = {k} neighbours asked of {len(z_retain)} retained samples")
    similarity = F.normalize(z_forget, dim=-1) @ F.normalize(z_retain, dim=-1).T
    return similarity.topk(k, dim=-1).indices


# -- ManiF-SMC --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ManifTargets:
    """Per erased sample, fixed before unlearning starts: the anchor c (mean of the original
    model's L2-normalised latents of its k nearest retained samples) and its positive (the
    nearest one's row in the retained set)."""

    anchors: Tensor  # (n_forget, d) float32
    positives: Tensor  # (n_forget,) int64


@torch.no_grad()
def manif_targets(original: nn.Module, forget: Any, retain: Any, k: int, batch_size: int,
                  device: torch.device) -> ManifTargets:
    """Anchors and positives from the original model, as ``create_unlearning_with_topk_loader``
    (lines 1559-1660) builds them once, before the first step."""
    z_forget = F.normalize(embed(original, forget, batch_size, device), dim=-1)
    z_retain = F.normalize(embed(original, retain, batch_size, device), dim=-1)
    nb = neighbours(z_forget, z_retain, k)
    return ManifTargets(z_retain[nb].mean(dim=1), nb[:, 0])


def smc_margin(z_erased: Tensor, z_positive: Tensor, anchors: Tensor) -> Tensor:
    """α = MSE(z_e, c) − MSE(z_p, c), each MSE a mean over the batch and the dimensions, from
    the surrogate's latents (``connect_determined_alpha``, lines 1763-1775)."""
    return F.mse_loss(z_erased, anchors) - F.mse_loss(z_positive, anchors)


def manif_loss(z_erased: Tensor, z_positive: Tensor, anchors: Tensor, logits_positive: Tensor, labels: Tensor,
               margin: Tensor | float, scale: float) -> Tensor:
    """scale · max(0, MSE(z_p, c) − MSE(z_e, c) + α + CE(logits_p, labels)) (lines 1788-1812:
    the sum is scaled, then clamped at 0). While the hinge is open α is a constant of the loss
    and leaves its gradient alone; it acts by closing the hinge."""
    inside = (F.mse_loss(z_positive, anchors) - F.mse_loss(z_erased, anchors) + margin
              + F.cross_entropy(logits_positive, labels))
    return (scale * inside).clamp(min=0)


def fresh_init(profile: Profile, data: Any, seed: int) -> nn.Module:
    """A freshly initialised ViT of the profile's architecture (seeded; the global RNG is left
    as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model("vit", profile, **build_args(data))


@torch.no_grad()
def _load(target: nn.Module, tensors: Iterable[Tensor]) -> None:
    for p, value in zip(target.parameters(), tensors, strict=True):
        p.copy_(value)


class BezierSurrogate:
    """The trained surrogate of ManiF-SMC's rebuttal: θ(t) = (1−t)² θ_original + 2t(1−t) θ_c +
    t² θ_current, ends frozen, the control point θ_c (started at the ends' midpoint) trained by
    Adam on the cross-entropy of retained batches at random t."""

    def __init__(self, original: nn.Module, current: nn.Module, lr: float):
        self.shape = copy.deepcopy(original).eval()
        self.names = [name for name, _ in original.named_parameters()]
        self.start = [p.detach().clone() for p in original.parameters()]
        self.control = [nn.Parameter((a + b.detach()) / 2) for a, b in zip(self.start, current.parameters(), strict=True)]
        self.optimizer = torch.optim.Adam(self.control, lr=lr)

    def point(self, t: float, current: nn.Module) -> list[Tensor]:
        return [(1 - t) ** 2 * a + 2 * t * (1 - t) * c + t ** 2 * b.detach()
                for a, c, b in zip(self.start, self.control, current.parameters(), strict=True)]

    def step(self, current: nn.Module, x: Tensor, y: Tensor, t: float) -> float:
        """One Adam step of the control point on a batch at curve position ``t``."""
        logits = functional_call(self.shape, dict(zip(self.names, self.point(t, current), strict=True)), (x,))
        loss = F.cross_entropy(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item()


def _manif_smc(model: nn.Module, original: nn.Module, forget: Any, retain: Any, profile: Profile, seed: int,
               device: torch.device, method: str) -> dict[str, Any]:
    """One epoch of ManiF-SMC over the erased samples (``unlearning_with_topk``, lines 1778-1820);
    ``model`` (a copy of ``original``) is changed in place."""
    u = profile.unlearn
    targets = manif_targets(original, forget, retain, u.k, profile.eval.batch_size, device)
    label_of = "positive" if method == "manif_smc_positive_label" else u.ce_label
    surrogate = copy.deepcopy(model).eval()
    order = torch.randperm(len(forget), generator=torch.Generator().manual_seed(seed)).split(u.batch_size)
    bezier = BezierSurrogate(original, model, u.lr) if method == "manif_smc_trained" else None
    retained = _stream(retain, u.batch_size, device, seed, len(order))
    curve_t = torch.rand(len(order), generator=torch.Generator().manual_seed(seed)).tolist()
    optimizer = torch.optim.Adam(model.parameters(), lr=u.lr)
    margins, losses = [], []
    model.train()
    for b, rows in enumerate(order):
        xe, ye = _all(take(forget, rows), device)
        xp, yp = _all(take(retain, targets.positives[rows]), device)
        anchors = targets.anchors[rows].to(device)
        if bezier is None:  # a fresh initialisation for every batch, as connect_determined_alpha draws it
            fresh = fresh_init(profile, retain, SURROGATE_SEED * (seed + 1) + b).to(device)
            _load(surrogate, (torch.lerp(p.detach(), f, u.surrogate_t)
                              for p, f in zip(model.parameters(), fresh.parameters(), strict=True)))
        else:
            bezier.step(model, *next(retained), curve_t[b])
            with torch.no_grad():
                _load(surrogate, bezier.point(u.surrogate_t, model))
        with torch.no_grad():
            margin = smc_margin(features(surrogate, xe)[0].float(), features(surrogate, xp)[0].float(), anchors)
        with autocast_context(device):
            z_e = features(model, xe)[0]
            z_p, logits_p = features(model, xp)
        loss = manif_loss(z_e.float(), z_p.float(), anchors, logits_p.float(), ye if label_of == "erased" else yp,
                          margin, u.loss_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        margins.append(margin.item())
        losses.append(loss.item())
    model.eval()
    return {"margin_mean": float(np.mean(margins)), "hinge_open": float(np.mean([v > 0 for v in losses])),
            "loss_mean": float(np.mean(losses)), "ce_label": label_of}


# -- the methods ------------------------------------------------------------------------------------

def fit(profile: Profile, train: ImageDataset, seed: int, device: torch.device, progress: bool = False, *,
        keep: str = "best") -> nn.Module:
    """A ViT trained from scratch on ``train`` with the profile's recipe: ``train_model``'s
    optimiser, schedule, seeds, epoch loop and choice of epoch (the lowest loss on the held-out
    validation images), with another training set (on the profile's own split it gives
    ``train_model``'s weights bit for bit on CPU). ``keep="last"`` keeps the last epoch instead
    and skips the per-epoch validation: a model meant to memorise its training set."""
    if keep not in ("best", "last"):
        raise ValueError(f"keep = {keep!r}; valid: best (lowest validation loss), last")
    if not isinstance(train, ImageDataset):
        raise TypeError("fit trains a ViT on an ImageDataset; language-model retraining is not built yet")
    r = profile.vit

    def train_batches(epoch: int):
        return image_batches(train, r.batch_size, device=device, shuffle=True, augment=r.augment, pad=r.pad,
                             seed=epoch_seed(seed, epoch))

    task = _vit_task(profile, seed, device)
    task = dataclasses.replace(task, train_batches=train_batches, steps_per_epoch=len(train_batches(0)))
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
    # A forked RNG: the seeded init (and training's dropout draws) leave the caller's global RNG
    # as it was, so a notebook's later draws do not depend on whether this came from the cache.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        model = build_model("vit", profile, **task.build).to(device)
        optimizer = torch.optim.AdamW(param_groups(model, task.weight_decay), lr=task.lr,
                                      fused=device.type == "cuda")
        total = task.epochs * task.steps_per_epoch
        scheduler = make_scheduler(optimizer, task.schedule, task.lr, total, task.warmup_steps(task.steps_per_epoch))
        fwd = distributed.wrap(model, seed)  # as train_model: DistributedDataParallel under torchrun
        fwd = torch.compile(fwd) if task.compile and device.type == "cuda" else fwd
        model.train()
        best_loss, best_state = float("inf"), None
        with progress_bar(total=total, disable=not (progress and distributed.is_main()), desc=f"retrain seed {seed}",
                          unit="step", mininterval=2.0) as bar:
            for epoch in range(task.epochs):
                _train_epoch(fwd, task, epoch, optimizer, scheduler, device, bar, progress)
                if keep == "last":
                    continue
                val_loss = evaluate(model, task.val_batches)["loss"]  # as train_model: keep the best epoch
                if val_loss < best_loss:
                    best_loss, best_state = val_loss, _clone_state(model)
        if best_state is not None:
            model.load_state_dict(best_state)
    return model.eval()


def _adam(model: nn.Module, stream: Iterable[tuple[Tensor, Any]],
          loss_fn: Callable[[nn.Module, Tensor, Tensor | None], Tensor], lr: float) -> float:
    """Adam steps of ``loss_fn`` over ``stream``; returns the mean loss."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    total, steps = 0.0, 0
    for x, y in stream:
        with autocast_context(x.device):
            loss = loss_fn(model, x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total, steps = total + loss.item(), steps + 1
    model.eval()
    return total / max(steps, 1)


def _cross_entropy(model: nn.Module, x: Tensor, y: Tensor | None) -> Tensor:
    return _train_loss(model_logits(model, x), x, y, 0.0)


def _wrong_labels(data: ImageDataset, seed: int) -> ImageDataset:
    """The same images, each labelled with a uniformly random class other than its own."""
    shift = torch.randint(1, data.num_classes, (len(data),), generator=torch.Generator().manual_seed(seed))
    return dataclasses.replace(data, labels=(data.labels + shift) % data.num_classes)


def build_args(data: Any) -> dict[str, int]:
    if not isinstance(data, ImageDataset):
        raise TypeError("building a fresh model needs image data (a ViT); language models are not built yet")
    return {"num_classes": data.num_classes, "in_chans": data.in_chans, "img_size": data.img_size}


def default_length(method: str, profile: Profile) -> int:
    """A baseline's length when the caller gives none: one epoch over the forget set (gradient
    ascent, random labels), or the shortest tuned number of fine-tuning steps."""
    return profile.unlearn.tune_finetune_steps[0] if method == "finetune" else 1


def unlearn(model: nn.Module | None, method: str, forget: Any, retain: Any, profile: Profile, *, seed: int = 0,
            device: torch.device | str | None = None, progress: bool = False, lr: float | None = None,
            length: int | None = None) -> nn.Module:
    """A new model that has forgotten ``forget`` by ``method`` (one of METHODS); ``model`` (the
    trained original, left untouched) is not used by ``retrain``. ``retrain`` is ``fit`` on the
    retained data (its last epoch, as the study's originals); ManiF-SMC takes its settings from
    ``profile.unlearn``; a baseline takes ``lr`` (default ``unlearn.lr``) and ``length`` (steps
    for fine-tuning, epochs over the forget set otherwise; default ``default_length``), at batch
    ``unlearn.batch_size``. ``seed`` fixes every random choice. The result is in eval mode with
    ``lmc_meta`` = {method, seed, wall_s, ...}."""
    if method not in METHODS:
        raise ValueError(f"unknown unlearning method {method!r}; valid methods: {', '.join(METHODS)}")
    if method != "retrain" and model is None:
        raise ValueError(f"{method} starts from the trained model: pass it as model")
    if method not in BASELINES and (lr is not None or length is not None):
        raise ValueError(f"lr and length are a baseline's ({', '.join(BASELINES)}); {method} takes its own")
    device = torch.device(device) if device is not None else resolve_device(profile)
    u = profile.unlearn
    lr = u.lr if lr is None else lr
    length = default_length(method, profile) if length is None else length
    start = time.perf_counter()
    extra: dict[str, Any] = {}
    if method == "retrain":
        out = fit(profile, retain, seed, device, progress, keep="last")
    else:
        out = copy.deepcopy(model).to(device)
        if method in BASELINES:
            extra = {"lr": lr, "length": length}
        if method == "finetune":
            extra["loss_mean"] = _adam(out, _stream(retain, u.batch_size, device, seed, length), _cross_entropy, lr)
        elif method == "gradient_ascent":
            epochs = _stream(forget, u.batch_size, device, seed, length * math.ceil(len(forget) / u.batch_size))
            extra["loss_mean"] = _adam(out, epochs, lambda m, x, y: -_cross_entropy(m, x, y), lr)
        elif method == "random_labels":
            relabelled = _wrong_labels(forget, seed)
            epochs = _stream(relabelled, u.batch_size, device, seed, length * math.ceil(len(forget) / u.batch_size))
            extra["loss_mean"] = _adam(out, epochs, _cross_entropy, lr)
        else:
            extra = _manif_smc(out, model.to(device), forget, retain, profile, seed, device, method)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    out.eval()
    out.lmc_meta = {"method": method, "seed": seed, "wall_s": time.perf_counter() - start, **extra}
    return out
