"""Unlearning metrics: accuracies and the membership attacks that tell whether a model forgot.

Three attacks, each fitted on samples it is not read on: a loss threshold (calibrated on one
half of the members and non-members, read on the other), the authors' latent MLP trained on the
original model (wwq5-code/ManiF @ 05c4e64, On_MNIST/26Mar25/MNIST_Normal_distribution.py,
``get_membership_inf_model``, lines 1331-1387), and the same MLP trained on each model's own
latents. Every AUC comes with a 95% interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmc_core.metrics import autocast_context, model_logits

from .data import ImageDataset
from .unlearning import batches, embed


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


def auc_interval(value: float, n_members: int, n_others: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% interval of an AUC from ``n_members`` and ``n_others`` samples (Hanley and McNeil
    1982), clipped to [0, 1]; at an AUC of 0 or 1 it is a point, the method's known limit."""
    q1, q2 = value / (2 - value), 2 * value ** 2 / (1 + value)
    var = (value * (1 - value) + (n_members - 1) * (q1 - value ** 2) + (n_others - 1) * (q2 - value ** 2))
    se = math.sqrt(max(var, 0.0) / (n_members * n_others))
    return max(0.0, value - z * se), min(1.0, value + z * se)


@dataclass
class LatentAttack:
    """The authors' membership attack (``get_membership_inf_model``, lines 1331-1387, and its
    ``LinearModel``, line 402): an MLP latent → 96 → ReLU → 1, trained with binary cross-entropy
    (Adam 5e-4, batch 16) on members' latents (label 1) against as many non-members' (label 0);
    a sample's score is its logit (higher: more member-like)."""

    net: nn.Sequential

    @classmethod
    def fit(cls, z_members: Tensor, z_others: Tensor, *, epochs: int, seed: int, lr: float = 5e-4,
            batch_size: int = 16) -> LatentAttack:
        n = min(len(z_members), len(z_others))  # balanced, as theirs (5,000 of each)
        if n == 0:
            raise ValueError("the latent attack needs member and non-member latents to train on")
        x = torch.cat([z_members[:n], z_others[:n]]).float().cpu()
        y = torch.cat([torch.ones(n), torch.zeros(n)])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = nn.Sequential(nn.Linear(x.shape[1], 96), nn.ReLU(), nn.Linear(96, 1))
        optimizer = torch.optim.Adam(net.parameters(), lr=lr)
        g = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            for rows in torch.randperm(2 * n, generator=g).split(batch_size):
                loss = F.binary_cross_entropy_with_logits(net(x[rows]).squeeze(1), y[rows])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        return cls(net.eval())

    @torch.no_grad()
    def scores(self, z: Tensor) -> Tensor:
        return self.net(z.float().cpu()).squeeze(1).double()


@dataclass(frozen=True)
class EvalSets:
    """What every model of one forget split is measured on. Members: ``retain`` (a sample of the
    retained training images); non-members: ``test`` (the test images of the classes the models
    keep). Both are cut in halves (``calibration_split``): the attacks are fitted on the first
    and read on the second. ``heldout``: unseen images like the erased ones, the other side of
    the forget set's AUC (random forgetting: the test scoring half; class forgetting: the erased
    class's test images, ``forget_test``)."""

    forget: ImageDataset
    retain: ImageDataset
    test: ImageDataset
    heldout: ImageDataset
    forget_test: ImageDataset | None = None

    @classmethod
    def build(cls, forget: ImageDataset, retain: ImageDataset, test: ImageDataset,
              forget_class: int | None = None) -> EvalSets:
        if forget_class is None:
            return cls(forget, retain, test, test.rows(calibration_split(len(test))[1].sort().values))
        erased = test.labels == forget_class
        class_test = test.rows(erased.nonzero().squeeze(1))
        return cls(forget, retain, test.rows((~erased).nonzero().squeeze(1)), class_test, class_test)


def loss_attack(forget: Tensor, retain: Tensor, test: Tensor, heldout: Tensor) -> dict[str, float]:
    """The loss-threshold attack from per-sample losses: calibrated on the first halves
    (``calibration_split``) of ``retain`` (members) and ``test`` (non-members), read on the
    second halves (``mia_heldout_acc``: balanced accuracy; ``mia_heldout_auc``), on ``forget``
    (the share called members) and as the AUC of ``forget`` vs ``heldout`` losses (``mia_auc``);
    mean losses too."""
    (fit_r, held_r), (fit_t, held_t) = calibration_split(len(retain)), calibration_split(len(test))
    attack = LossThresholdAttack.fit(retain[fit_r], test[fit_t])
    test_rate = attack.member_rate(test[held_t])
    out = {"forget_loss": float(forget.mean()), "retain_loss": float(retain.mean()), "test_loss": float(test.mean()),
           "mia_forget_rate": attack.member_rate(forget), "mia_test_rate": test_rate,
           "mia_calibration_acc": attack.calibration_accuracy,
           "mia_heldout_acc": (attack.member_rate(retain[held_r]) + 1.0 - test_rate) / 2}
    for name, (members, others) in (("mia_auc", (forget, heldout)), ("mia_heldout_auc", (retain[held_r], test[held_t]))):
        out[name] = auc(members, others)
        out[f"{name}_lo"], out[f"{name}_hi"] = auc_interval(out[name], len(members), len(others))
    return out


def unlearning_metrics(model: nn.Module, sets: EvalSets, *, original_attack: LatentAttack, attack_epochs: int,
                       batch_size: int = 256, device: torch.device | str | None = None) -> dict[str, float]:
    """Accuracies (forget, retained, test; the erased class's test images when a class is
    erased) and three attacks, each fitted where it is not read:

    - loss threshold: calibrated on the first halves of ``retain`` and ``test``; its balanced
      accuracy on the second halves (``mia_heldout_acc``, its positive control), the share of
      erased samples it calls members, and the AUC of erased vs ``heldout`` losses;
    - ``latent``: the authors' attack, trained on the original model's latents (``original_attack``),
      scoring this model's latents: AUC of erased vs ``heldout``;
    - ``latent_own``: the same MLP trained on this model's own latents; its AUC of members vs
      non-members on the second halves (``latent_own_heldout_auc``) and of erased vs ``heldout``.

    Every AUC has a 95% interval (``_lo``, ``_hi``); 0.5 means erased samples look unseen."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    (lf, cf), (lr_, cr), (lt, ct), (lh, _) = (per_sample(model, d, batch_size, device)
                                              for d in (sets.forget, sets.retain, sets.test, sets.heldout))
    out = {"forget_acc": float(cf.mean()), "retain_acc": float(cr.mean()), "test_acc": float(ct.mean()),
           **loss_attack(lf, lr_, lt, lh)}
    (fit_r, held_r), (fit_t, held_t) = calibration_split(len(lr_)), calibration_split(len(lt))
    if sets.forget_test is not None:
        out["forget_test_acc"] = float(per_sample(model, sets.forget_test, batch_size, device)[1].mean())
    z = {name: embed(model, d, batch_size, device) for name, d in
         (("forget", sets.forget), ("retain", sets.retain), ("test", sets.test), ("heldout", sets.heldout))}
    own = LatentAttack.fit(z["retain"][fit_r], z["test"][fit_t], epochs=attack_epochs, seed=MIA_SPLIT_SEED)
    aucs = {
        "latent_auc": (-original_attack.scores(z["forget"]), -original_attack.scores(z["heldout"])),
        "latent_own_auc": (-own.scores(z["forget"]), -own.scores(z["heldout"])),
        "latent_own_heldout_auc": (-own.scores(z["retain"][held_r]), -own.scores(z["test"][held_t])),
    }
    for name, (members, others) in aucs.items():
        out[name] = auc(members, others)
        out[f"{name}_lo"], out[f"{name}_hi"] = auc_interval(out[name], len(members), len(others))
    return out
