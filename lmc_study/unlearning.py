"""Machine unlearning, and whether an unlearned model lands in the retrained model's basin.

A forget set is a seeded random part of the training split; the rest is the retained set. The
gold standard is ``retrain``: a model trained from scratch on the retained data with the profile's
recipe (the trainer's loop, only the training set changes). The approximate methods start from
the trained ("original") model:

- ``finetune``: Adam on retained data only (``unlearn.finetune_steps`` steps);
- ``gradient_ascent``: one epoch of Adam ascending the cross-entropy of the erased samples;
- ``random_labels``: one epoch of Adam on the erased samples, each relabelled with a random
  wrong class;
- ``manif_smc`` (ManiF-SMC, NEIGHBOURS.md): for each erased sample, the k retained samples most
  cosine-similar in the model's normalised pooled representation; anchor c = their mean,
  positive p = the nearest. Margin α = MSE(z_e, c) − MSE(z_p, c) measured on the
  self-mode-connectivity surrogate, the model lerped at t = 0.5 to a fresh initialisation.
  Loss per batch of erased samples, with the cross-entropy inside the hinge as in the released
  script (here every term is a batch mean): scale · max(0, MSE(z_p, c) − MSE(z_e, c) + α + CE);
  Adam, one epoch over the erased samples. Neighbours are chosen by cosine similarity; the MSEs
  are on the pooled representations themselves (a ViT's are LayerNorm outputs, so the model's
  and the surrogate's are on the same scale). While the hinge is open, α is a constant and does
  not change the gradient: the margin acts only by closing the hinge (``hinge_open`` in the
  model's metadata is the fraction of steps where it was open);
- ``manif_smc_trained``: the same with the surrogate first trained ``unlearn.surrogate_steps``
  Adam steps on retained data (the variant of their rebuttal; the released script does not
  train it).

Metrics (``unlearning_metrics``): accuracy on the forget, retained and test sets and a
loss-threshold membership-inference attack: the threshold that best separates retained
(members) from test samples (non-members, balanced accuracy), then the fraction of erased
samples it calls members, and the AUC of the erased samples' losses against the test samples'
(0.5: erased samples look exactly like unseen ones, what an ideal retrained model gives).

``study`` runs every method on every seed of ``profile.unlearn`` and measures the loss barrier
between each model and the retrained one (vanilla, weight matching, learned matching), with a
second retrained model (another seed) as the reference. Both retrained models start from
initialisations other than the original's: retrained from the original's own initialisation
(97% the same data), a model stayed in the original's basin by lineage (smoke profile, one
forget set: vanilla barrier 0.06 to the original, against 1.24 between retrained models of
different initialisations), so every method starting from the original looked "in the retrained
basin" for that reason alone.

Data dispatch (``take``, ``batches``, ``features``, ``per_sample``) also covers GPT-2 token
blocks, so a language-model study can follow; training from scratch (``fit``), the fresh
initialisation of the surrogate and random labels are the ViT's for now.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn
from transformers import GPT2LMHeadModel

from lmc_core import distributed
from lmc_core.interpolation import interpolate
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

METHODS = ("retrain", "finetune", "gradient_ascent", "random_labels", "manif_smc", "manif_smc_trained")
# The chapter's rows: the trained model before unlearning (trivial baseline), every method, and a
# second retrained model from another seed (the reference for the barrier to the retrained one).
MODELS = ("original", *METHODS, "retrain_other")
LABELS = {
    "original": "original (nothing forgotten)", "retrain": "retrain (gold standard)",
    "finetune": "fine-tune on retained", "gradient_ascent": "gradient ascent",
    "random_labels": "random labels", "manif_smc": "ManiF-SMC", "manif_smc_trained": "ManiF-SMC, trained surrogate",
    "retrain_other": "retrain, other seed (reference)",
}
ALIGNMENTS = ("vanilla", "weight_matching", "learned_matching")
METRICS = ("forget_acc", "retain_acc", "test_acc", "mia_auc", "mia_forget_rate", "wall_s")
UNLEARN_VERSION = 1  # bump when a change here changes the weights a method produces (cache key)
RETRAIN_SEED = 1000  # seed s's retrained model has model seed s + RETRAIN_SEED (an init of its own)
OTHER_SEED = 2000  # and its reference, the second retrained model, seed s + OTHER_SEED
DAMAGED_NATS = 0.5  # verdicts: test loss this far above the retrained model's makes a barrier moot
SURROGATE_SEED = 10_000  # the fresh initialisation of seed s's surrogate: seed s + SURROGATE_SEED


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

    def fingerprint(self) -> str:
        """sha256 of the split's size and forget rows: the cache key of what is trained on it."""
        size = len(self.forget_index) + len(self.retain_index)
        rows = self.forget_index.numpy().astype("<i8").tobytes()
        return hashlib.sha256(f"{size}:".encode() + rows).hexdigest()


def forget_set(dataset: Any, n: int, seed: int) -> ForgetSplit:
    """``n`` random rows of ``dataset`` (seeded) to forget, the others retained; both sorted."""
    size = len(dataset)
    if not 1 <= n < size:
        raise ValueError(f"forget set size n = {n} must be between 1 and {size - 1}: the training split "
                         f"has {size} samples and the retained set cannot be empty")
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed))
    forget, retain = order[:n].sort().values, order[n:].sort().values
    return ForgetSplit(take(dataset, forget), take(dataset, retain), forget, retain, seed)


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


def anchor_positive(z_neighbours: Tensor) -> tuple[Tensor, Tensor]:
    """Anchor (the mean of each sample's k neighbours) and positive (the nearest, column 0) of
    representations shaped (n, k, d)."""
    return z_neighbours.mean(dim=1), z_neighbours[:, 0]


def _mse(a: Tensor, b: Tensor) -> Tensor:
    return (a - b).square().mean(dim=-1)


def smc_margins(z_erased: Tensor, z_neighbours: Tensor) -> Tensor:
    """α = MSE(z_e, c) − MSE(z_p, c) per erased sample (representations from the surrogate)."""
    anchor, positive = anchor_positive(z_neighbours)
    return _mse(z_erased, anchor) - _mse(positive, anchor)


def manif_loss(z_erased: Tensor, z_neighbours: Tensor, logits_positive: Tensor, targets_positive: Tensor | None,
               inputs_positive: Tensor, margins: Tensor, scale: float) -> Tensor:
    """scale · max(0, MSE(z_p, c) − MSE(z_e, c) + α + CE(positives)), every term a batch mean
    (``margins``: α per erased sample)."""
    anchor, positive = anchor_positive(z_neighbours)
    inside = (_mse(positive, anchor) - _mse(z_erased, anchor) + margins).mean()
    return scale * F.relu(inside + _train_loss(logits_positive, inputs_positive, targets_positive, 0.0))


# -- the methods ------------------------------------------------------------------------------------

def fit(profile: Profile, train: ImageDataset, seed: int, device: torch.device, progress: bool = False) -> nn.Module:
    """A ViT trained from scratch on ``train`` with the profile's recipe: ``train_model``'s
    optimiser, schedule, seeds, epoch loop and choice of epoch (the lowest loss on the held-out
    validation images), with another training set (on the profile's own split it gives
    ``train_model``'s weights bit for bit on CPU)."""
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
                val_loss = evaluate(model, task.val_batches)["loss"]  # as train_model: keep the best epoch
                if val_loss < best_loss:
                    best_loss, best_state = val_loss, _clone_state(model)
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


def smc_surrogate(model: nn.Module, profile: Profile, data: Any, seed: int, t: float) -> nn.Module:
    """Self mode connectivity: the model's weights lerped a fraction ``t`` of the way to a fresh
    initialisation (seeded) of the same architecture."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = build_model("vit", profile, **build_args(data))
    device = next(model.parameters()).device
    return interpolate(fresh.to(device), model, t).eval()  # t θ_fresh + (1 − t) θ_model


def _manif_smc(model: nn.Module, forget: Any, retain: Any, profile: Profile, seed: int, device: torch.device,
               trained_surrogate: bool) -> dict[str, Any]:
    u, bs = profile.unlearn, profile.eval.batch_size
    nb = neighbours(embed(model, forget, bs, device), embed(model, retain, bs, device), u.k)
    surrogate = smc_surrogate(model, profile, retain, SURROGATE_SEED + seed, u.surrogate_t)
    if trained_surrogate:
        _adam(surrogate, _stream(retain, u.batch_size, device, seed, u.surrogate_steps), _cross_entropy, u.lr)
    z_neighbours = embed(surrogate, take(retain, nb.reshape(-1)), bs, device).view(*nb.shape, -1)
    margins = smc_margins(embed(surrogate, forget, bs, device), z_neighbours)

    order = torch.randperm(len(forget), generator=torch.Generator().manual_seed(seed))
    chunks = order.split(u.batch_size)
    k, open_steps = u.k, []

    def stream():
        for rows in chunks:
            xe, _ = _all(take(forget, rows), device)
            xn, yn = _all(take(retain, nb[rows].reshape(-1)), device)
            yield torch.cat([xe, xn]), (rows, yn)

    def loss_fn(m: nn.Module, x: Tensor, extra: tuple[Tensor, Tensor | None]) -> Tensor:
        rows, yn = extra
        b = len(rows)
        pooled, logits = features(m, x)
        z = pooled.float()
        positive = slice(0, None, k)  # the nearest neighbour of each erased sample
        loss = manif_loss(z[:b], z[b:].view(b, k, -1), logits[b:][positive], None if yn is None else yn[positive],
                          x[b:][positive], margins[rows].to(z.device), u.loss_scale)
        open_steps.append(bool(loss > 0))
        return loss

    mean_loss = _adam(model, stream(), loss_fn, u.lr)
    return {"margin_mean": float(margins.mean()), "margin_positive": float((margins > 0).double().mean()),
            "hinge_open": sum(open_steps) / len(open_steps), "loss_mean": mean_loss}


def unlearn(model: nn.Module | None, method: str, forget: Any, retain: Any, profile: Profile, *, seed: int = 0,
            device: torch.device | str | None = None, progress: bool = False) -> nn.Module:
    """A new model that has forgotten ``forget`` by ``method`` (one of METHODS); ``model`` (the
    trained original, left untouched) is not used by ``retrain``. Settings: ``profile.unlearn``
    (and ``profile.vit`` for ``retrain``); ``seed`` fixes every random choice. The result is in
    eval mode with ``lmc_meta`` = {method, seed, wall_s, ...}."""
    if method not in METHODS:
        raise ValueError(f"unknown unlearning method {method!r}; valid methods: {', '.join(METHODS)}")
    if method != "retrain" and model is None:
        raise ValueError(f"{method} starts from the trained model: pass it as model")
    device = torch.device(device) if device is not None else resolve_device(profile)
    u = profile.unlearn
    start = time.perf_counter()
    extra: dict[str, Any] = {}
    if method == "retrain":
        out = fit(profile, retain, seed, device, progress)
    else:
        out = copy.deepcopy(model).to(device)
        if method == "finetune":
            extra["loss_mean"] = _adam(out, _stream(retain, u.batch_size, device, seed, u.finetune_steps),
                                       _cross_entropy, u.lr)
        elif method == "gradient_ascent":
            one_epoch = batches(forget, u.batch_size, device, shuffle=True, seed=seed)
            extra["loss_mean"] = _adam(out, one_epoch, lambda m, x, y: -_cross_entropy(m, x, y), u.lr)
        elif method == "random_labels":
            relabelled = batches(_wrong_labels(forget, seed), u.batch_size, device, shuffle=True, seed=seed)
            extra["loss_mean"] = _adam(out, relabelled, _cross_entropy, u.lr)
        else:
            extra = _manif_smc(out, forget, retain, profile, seed, device,
                               trained_surrogate=method == "manif_smc_trained")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    out.eval()
    out.lmc_meta = {"method": method, "seed": seed, "wall_s": time.perf_counter() - start, **extra}
    return out


# -- metrics ----------------------------------------------------------------------------------------

@torch.no_grad()
def per_sample(model: nn.Module, data: Any, batch_size: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """(cross-entropy, correct) of every item, float64 on CPU; a token block's are the means over
    its predicted tokens."""
    was_training = model.training
    model.eval()
    losses, correct = [], []
    for x, y in batches(data, batch_size, device):
        with autocast_context(x.device):
            logits = model_logits(model, x).float()
        if y is None:  # next-token prediction: one row of targets per block
            logits, y = logits[:, :-1], x[:, 1:]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
        loss = loss.view(y.shape[0], -1).mean(1)
        hit = (logits.argmax(-1) == y).double().view(y.shape[0], -1).mean(1)
        losses.append(loss.double().cpu())
        correct.append(hit.cpu())
    model.train(was_training)
    return torch.cat(losses), torch.cat(correct)


def auc(member_losses: Sequence[float] | Tensor, other_losses: Sequence[float] | Tensor) -> float:
    """P(a member's loss < another's), ties counting one half: the AUC of the attack score −loss."""
    pos = np.asarray(member_losses, dtype=np.float64)
    neg = np.sort(np.asarray(other_losses, dtype=np.float64))
    if not len(pos) or not len(neg):
        raise ValueError("auc needs at least one loss on each side")
    below = np.searchsorted(neg, pos, side="left")
    above = len(neg) - np.searchsorted(neg, pos, side="right")
    return float((above + 0.5 * (len(neg) - above - below)).sum() / (len(pos) * len(neg)))


@dataclass(frozen=True)
class LossThresholdAttack:
    """Membership inference: a sample is called a member when its loss is <= ``threshold``."""

    threshold: float
    calibration_accuracy: float  # balanced accuracy on the calibration members and non-members

    @classmethod
    def fit(cls, member_losses: Sequence[float] | Tensor, other_losses: Sequence[float] | Tensor
            ) -> LossThresholdAttack:
        """The threshold with the best balanced accuracy (the lowest among ties; −inf when no
        threshold beats calling nobody a member)."""
        mem = np.sort(np.asarray(member_losses, dtype=np.float64))
        non = np.sort(np.asarray(other_losses, dtype=np.float64))
        if not len(mem) or not len(non):
            raise ValueError("the attack needs member and non-member losses to calibrate on")
        candidates = np.unique(np.concatenate([mem, non]))
        tpr = np.searchsorted(mem, candidates, side="right") / len(mem)
        tnr = 1.0 - np.searchsorted(non, candidates, side="right") / len(non)
        balanced = (tpr + tnr) / 2
        best = int(np.argmax(balanced))
        if balanced[best] <= 0.5:
            return cls(float("-inf"), 0.5)
        return cls(float(candidates[best]), float(balanced[best]))

    def member_rate(self, losses: Sequence[float] | Tensor) -> float:
        """Fraction of ``losses`` called members."""
        return float((np.asarray(losses, dtype=np.float64) <= self.threshold).mean())


MIA_SPLIT_SEED = 0  # which half of the retained and test samples calibrates the attack


def calibration_split(n: int) -> tuple[Tensor, Tensor]:
    """(calibration, scoring) indices of ``n`` samples: a seeded half each. The attack's threshold
    is fit on one half and its rates are read on the other, never on the samples it was fit to."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(MIA_SPLIT_SEED))
    return order[: n // 2], order[n // 2:]


def unlearning_metrics(model: nn.Module, forget: Any, retain: Any, test: Any, *, batch_size: int = 256,
                       device: torch.device | str | None = None) -> dict[str, float]:
    """Accuracy on the forget, retained and test sets, and a loss-threshold membership attack:
    calibrated on half of the retained (members) and half of the test samples (non-members,
    `calibration_split`), then read on samples it was not fit to: its member rate on the erased
    samples, on the other half of the test samples (its false positive rate) and its balanced
    accuracy on the other halves; with the AUC of erased vs test losses (ideal retraining: 0.5)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    (lf, cf), (lr, cr), (lt, ct) = (per_sample(model, d, batch_size, device) for d in (forget, retain, test))
    (fit_r, held_r), (fit_t, held_t) = calibration_split(len(lr)), calibration_split(len(lt))
    attack = LossThresholdAttack.fit(lr[fit_r], lt[fit_t])
    test_rate = attack.member_rate(lt[held_t])
    return {
        "forget_acc": float(cf.mean()), "retain_acc": float(cr.mean()), "test_acc": float(ct.mean()),
        "forget_loss": float(lf.mean()), "retain_loss": float(lr.mean()), "test_loss": float(lt.mean()),
        "mia_auc": auc(lf, lt), "mia_forget_rate": attack.member_rate(lf), "mia_test_rate": test_rate,
        "mia_calibration_acc": attack.calibration_accuracy,
        "mia_heldout_acc": (attack.member_rate(lr[held_r]) + 1.0 - test_rate) / 2,
    }
