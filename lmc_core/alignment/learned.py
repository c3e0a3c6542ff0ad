"""Learned matching (the paper's Algorithm 1) and its soft variant, for two or more models.

Each aligned model m carries latent matrices: Z_O (residual), Z_H (heads, per layer) and Z_FF
(MLP units, per layer), initialised from weight matching (or the identity). Every step
  1. projects them: P = Hungarian(Z) with a straight-through estimator (forward hard, backward
     identity into Z) — or P = Sinkhorn(exp(Z/τ)) for soft matching — and O = U Vᵀ of the SVD
     of Z_O, differentiated through (see `solvers.polar`); the permutation-only ablation
     projects Z_O with the Hungarian as well;
  2. aligns each model with its projected symmetry;
  3. samples interpolation weights (λ ~ U(0.4, 0.6) by default for a pair; Dirichlet(α·1) for
     several models) and takes the cross-entropy of the interpolated canonical model on a batch;
  4. takes an Adam step on the Z's. The models' own weights never change.

The hard permutation latents start one-hot (entries 0 and 1), and Adam moves each entry by
about its learning rate per step, so at the orthogonal map's rate (1e-3) an assignment needs
hundreds of steps to change and the permutations stay at their initialisation. They can have
their own, larger rate (`perm_lr`); the study uses one for the permutation-only ablation
(`profiles.AlignRecipe.lm_perm_lr`, with the measurements behind it).

The authors' code trains the latents differently (../shared/OFFICIAL-CODE.md); each difference
is an option of `learn` / `LatentSymmetry`: AdamW with weight decay on the latents
(`optimizer`, `weight_decay`), linear warmup over 5% of the steps then cosine decay
(`schedule`), gradient clipping (`clip_norm`), dropout inside the objective (`dropout`), the
latents with the lowest validation loss at a random λ every `val_every` steps instead of the
last ones (`val_data`), and a start perturbed by N(0, noise²) (`LatentSymmetry(noise=...)`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import distributed
from ..canonical import CanonicalTransformer, canonical_forward
from ..metrics import autocast_context
from ..progress import progress_bar
from ..symmetry import Symmetry, UnitMap
from .solvers import (
    assignment,
    fix_ones,
    one_hot_rows,
    polar,
    sinkhorn,
    straight_through_permutation,
)

SOFT_INIT_MIX = 0.05  # mass spread uniformly when soft matching starts from a permutation
LAMBDA_SAMPLERS = ("fixed_0.5", "uniform_0.4_0.6", "uniform_0_1", "normal_0.5_0.1", "uniform_0.2_0.5", "dirichlet")
OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "warmup_cosine")
WARMUP_FRACTION = 0.05  # of all steps, the authors' warmup


def sample_weights(sampler: str, num_models: int, rng: np.random.Generator, alpha: float = 0.1) -> list[float]:
    """Interpolation weights of the models for one step. For a pair, λ is the weight of the
    first (reference) model: θ = λ θ_A + (1 − λ) θ_B."""
    if sampler == "dirichlet":
        return rng.dirichlet([alpha] * num_models).tolist()
    if num_models != 2:
        raise ValueError(f"sampler {sampler!r} is for pairs; use 'dirichlet' for {num_models} models")
    if sampler == "fixed_0.5":
        lam = 0.5
    elif sampler == "uniform_0.4_0.6":
        lam = rng.uniform(0.4, 0.6)
    elif sampler == "uniform_0_1":
        lam = rng.uniform(0.0, 1.0)
    elif sampler == "normal_0.5_0.1":
        lam = float(np.clip(rng.normal(0.5, 0.1), 0.0, 1.0))
    elif sampler == "uniform_0.2_0.5":  # the paper's code, width-heterogeneous: weight of the wider model
        lam = rng.uniform(0.2, 0.5)
    else:
        raise ValueError(f"unknown lambda sampler {sampler!r}; valid: {', '.join(LAMBDA_SAMPLERS)}")
    return [lam, 1.0 - lam]


class LatentSymmetry(nn.Module):
    """Learnable latents Z_O, Z_H, Z_FF of one model and their projection to a Symmetry."""

    def __init__(self, init: Symmetry, depth: int, width: int, num_heads: int, mlp_width: int, *,
                 residual: str = "orthogonal", relaxation: str = "hard", tau: float = 0.05,
                 sinkhorn_iters: int = 20, sinkhorn_tol: float | None = None, dtype: torch.dtype = torch.float32, device: torch.device | None = None,
                 keep_centred: bool = False, noise: float = 0.0, seed: int = 0):
        super().__init__()
        if residual not in ("orthogonal", "permutation"):
            raise ValueError(f"residual must be 'orthogonal' or 'permutation', got {residual!r}")
        if relaxation not in ("hard", "soft"):
            raise ValueError(f"relaxation must be 'hard' or 'soft', got {relaxation!r}")
        self.residual, self.relaxation, self.tau = residual, relaxation, tau
        self.sinkhorn_iters, self.sinkhorn_tol = sinkhorn_iters, sinkhorn_tol
        self.orthogonal = functools.partial(fix_ones, polar) if keep_centred else polar  # keep_centred: 1 O = 1

        def latent(value: Tensor | None, n: int, layers: int | None) -> nn.Parameter:
            if value is None:
                value = torch.eye(n) if layers is None else torch.eye(n).expand(layers, n, n)
            return nn.Parameter(value.detach().to(device=device, dtype=dtype).clone())

        self.z_residual = latent(init.residual, width, None)
        self.z_heads = latent(None if init.heads is None else init.heads.read, num_heads, depth)
        self.z_mlp = latent(None if init.mlp is None else init.mlp.read, mlp_width, depth)
        if relaxation == "soft":
            # Start Sinkhorn near the given permutation but off its saturated corner: from a hard
            # one-hot Z, exp(Z/τ) gives gradients of ~e^(-1/τ) and soft matching never moves.
            with torch.no_grad():
                for z in (self.z_heads, self.z_mlp):
                    n = z.shape[-1]
                    z.copy_(tau * torch.log((1 - SOFT_INIT_MIX) * z + SOFT_INIT_MIX / n))
        if noise > 0:  # the authors start from I + N(0, noise²) on top of weight matching
            # a stream of its own: `seed` also seeds the width lift and the dropout masks
            generator = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, 2]).generate_state(1)[0]))
            with torch.no_grad():
                for z in (self.z_residual, self.z_heads, self.z_mlp):
                    z.add_(noise * torch.randn(z.shape, generator=generator, dtype=torch.float64).to(z))

    def _units(self, z: Tensor, hard: bool) -> Tensor:
        if self.relaxation == "soft":
            return sinkhorn(z, self.tau, self.sinkhorn_iters, self.sinkhorn_tol)
        return straight_through_permutation(z) if not hard else one_hot_rows(assignment(z), z.shape[-1], z.dtype)

    def forward(self) -> Symmetry:
        """The projected symmetry, differentiable in the latents."""
        if self.residual == "orthogonal":
            O = self.orthogonal(self.z_residual)
        else:
            O = straight_through_permutation(self.z_residual.T).T
        heads, units = self._units(self.z_heads, False), self._units(self.z_mlp, False)
        return Symmetry(O, UnitMap(heads, heads), UnitMap(units, units))

    @torch.no_grad()
    def project(self) -> Symmetry:
        """The final symmetry: hard permutations (soft matrices for soft matching), exact O."""
        if self.residual == "orthogonal":
            O = self.orthogonal(self.z_residual)
        else:
            O = one_hot_rows(assignment(self.z_residual.T), self.z_residual.shape[0], self.z_residual.dtype).T
        heads, units = self._units(self.z_heads, True), self._units(self.z_mlp, True)
        return Symmetry(O.detach(), UnitMap(heads.detach(), heads.detach()), UnitMap(units.detach(), units.detach()))

    def param_groups(self, lr: float, perm_lr: float) -> list[dict]:
        """Adam parameter groups: hard permutation latents at `perm_lr`, the rest at `lr`."""
        hard = self.relaxation == "hard"
        perm = [self.z_heads, self.z_mlp] if hard else []
        other = [self.z_heads, self.z_mlp] if not hard else []
        (perm if self.residual == "permutation" else other).append(self.z_residual)
        return [g for g in ({"params": perm, "lr": perm_lr}, {"params": other, "lr": lr}) if g["params"]]


def learn(models: list[CanonicalTransformer], latents: list[LatentSymmetry | None], data: Iterable, *,
          epochs: int, lr: float, perm_lr: float | None = None, steps_per_epoch: int | None = None,
          sampler: str = "uniform_0.4_0.6",
          alpha: float = 0.1, seed: int = 0, on_epoch: Callable[[int, list[Symmetry | None]], dict] | None = None,
          progress: bool = True, optimizer: str = "adam", weight_decay: float = 0.0, schedule: str = "constant",
          clip_norm: float | None = None, dropout: float = 0.0, val_data: Iterable | None = None,
          val_every: int = 50, autocast: bool | None = None) -> dict[str, list]:
    """Optimise the latents so that interpolations of the aligned models have low loss.
    `latents[m]` None keeps model m fixed (the reference); `perm_lr` (default `lr`) is the rate
    of the hard permutation latents. The other keywords are the authors' variations (module
    docstring); with `val_data`, the latents end at the checkpoint (every `val_every` steps and the
    last step) of lowest validation loss. `autocast`: the mixed model's forward and backward in
    bf16 (None: on CUDA only; True also on CPU, where bf16 matmuls are fast on CPUs with AVX512-BF16
    or AMX; `bench/align.py` measures it). Returns the per-epoch history (plus "val_step",
    "val_loss" and "best_step" with `val_data`)."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {optimizer!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}; got {schedule!r}")
    config = models[0].config
    params = [{k: v.detach() for k, v in m.params().items()} for m in models]
    groups = [g for lat in latents if lat is not None for g in lat.param_groups(lr, perm_lr or lr)]
    if not groups:
        raise ValueError("learned matching needs at least one model with latents")
    distributed.broadcast(z for g in groups for z in g["params"])  # under torchrun: one starting point
    opt_class = torch.optim.Adam if optimizer == "adam" else torch.optim.AdamW
    optim = opt_class(groups, lr=lr, weight_decay=weight_decay)
    total_steps = epochs * (_length(data, steps_per_epoch) or 0)
    if schedule == "warmup_cosine" and total_steps == 0:
        raise ValueError("schedule='warmup_cosine' needs the number of steps: give steps_per_epoch or sized data")
    scheduler = None if schedule == "constant" else torch.optim.lr_scheduler.LambdaLR(
        optim, functools.partial(_warmup_cosine, warmup=max(1, round(WARMUP_FRACTION * total_steps)), total=total_steps))
    latent_params = [z for g in groups for z in g["params"]]
    rng = np.random.default_rng(seed)
    val_rng = np.random.default_rng([seed, 1])  # validation λs: the training stream stays as without them
    device = params[0]["qk"].device
    history: dict[str, list] = {"epoch": [], "train_loss": []}
    best: dict = {"loss": float("inf"), "step": -1, "state": None}

    def validate(step: int) -> None:
        loss = _validation_loss(params, latents, config, val_data, sample_weights(sampler, len(models), val_rng, alpha),
                                autocast)
        history.setdefault("val_step", []).append(step)
        history.setdefault("val_loss", []).append(loss)
        if loss < best["loss"]:
            best.update(loss=loss, step=step, state=[None if lat is None else {k: v.clone() for k, v in lat.state_dict().items()}
                                                     for lat in latents])

    if on_epoch is not None:  # epoch 0: the starting point (weight matching, or identity)
        _record(history, 0, float("nan"), on_epoch(0, [None if lat is None else lat.project() for lat in latents]))
    # Dropout masks from `seed`, whatever ran before; the caller's random state is left as it was.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        step = 0
        for epoch in range(1, epochs + 1):
            total, steps = 0.0, 0
            bar = progress_bar(data, desc=f"learned matching, epoch {epoch}/{epochs}", disable=not progress, leave=False,
                       total=_length(data, steps_per_epoch))
            for inputs, targets in bar:
                if steps_per_epoch is not None and steps >= steps_per_epoch:
                    break
                inputs = inputs.to(device)
                targets = None if targets is None else targets.to(device)
                inputs, targets, share = distributed.shard(inputs, targets)  # under torchrun: this process's slice
                weights = sample_weights(sampler, len(models), rng, alpha)
                loss = _interpolated_loss(params, latents, config, weights, inputs, targets, dropout, autocast) * share
                optim.zero_grad(set_to_none=True)
                loss.backward()
                distributed.average_gradients(latent_params)
                if clip_norm is not None:
                    torch.nn.utils.clip_grad_norm_(latent_params, clip_norm)
                optim.step()
                if scheduler is not None:
                    scheduler.step()
                total += loss.detach()
                steps += 1
                step += 1
                if val_data is not None and step % val_every == 0:
                    validate(step)
                if progress:
                    bar.set_postfix(loss=f"{loss.item():.4f}")
            if val_data is not None and epoch == epochs and (not history.get("val_step") or history["val_step"][-1] != step):
                validate(step)  # the last step is always a candidate
            if val_data is not None and epoch == epochs and best["state"] is not None:
                for lat, state in zip(latents, best["state"], strict=True):
                    if lat is not None:
                        lat.load_state_dict(state)
                history["best_step"] = [best["step"]]
            extra = on_epoch(epoch, [None if lat is None else lat.project() for lat in latents]) if on_epoch else {}
            _record(history, epoch, distributed.mean(total) / max(steps, 1), extra)
    return history


def _warmup_cosine(step: int, warmup: int, total: int) -> float:
    """Learning-rate factor: linear warmup over `warmup` steps, then cosine decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def _interpolated_loss(params: list[dict[str, Tensor]], latents: list[LatentSymmetry | None], config,
                       weights: list[float], inputs: Tensor, targets: Tensor | None, dropout: float = 0.0,
                       autocast: bool | None = None) -> Tensor:
    """Mean cross-entropy of Σ_m w_m (model m aligned by its current latents) on one batch. Only
    the forward of the mixed model runs under `autocast` (bf16; None: on CUDA only): the
    projections of the latents (SVD, Hungarian) and the loss stay in float32."""
    aligned = [p if lat is None else lat().apply_params(p, config)[0] for p, lat in zip(params, latents, strict=True)]
    mixed = {k: sum(w * a[k] for w, a in zip(weights, aligned, strict=True)) for k in aligned[0]}
    next_token = targets is None
    with autocast_context(inputs.device, autocast):
        logits = canonical_forward(mixed, config, inputs, dropout=dropout, last_position=not next_token)
    targets = inputs[:, 1:] if next_token else targets
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))


@torch.no_grad()
def _validation_loss(params: list[dict[str, Tensor]], latents: list[LatentSymmetry | None], config,
                     data: Iterable, weights: list[float], autocast: bool | None = None) -> float:
    """Mean loss over `data` of the interpolation at `weights`, no dropout, latents projected, at
    the training steps' precision (`autocast`)."""
    device = params[0]["qk"].device
    total, count = 0.0, 0
    for inputs, targets in data:
        inputs = inputs.to(device)
        targets = None if targets is None else targets.to(device)
        n = inputs.shape[0] if targets is not None else inputs.shape[0] * (inputs.shape[1] - 1)
        total += float(_interpolated_loss(params, latents, config, weights, inputs, targets, autocast=autocast)) * n
        count += n
    if count == 0:
        raise ValueError("val_data yielded no batches")
    return total / count


def _record(history: dict[str, list], epoch: int, train_loss: float, extra: dict) -> None:
    history["epoch"].append(epoch)
    history["train_loss"].append(train_loss)
    for key, value in extra.items():
        history.setdefault(key, []).append(value)


def _length(data: Iterable, cap: int | None) -> int | None:
    try:
        n = len(data)  # type: ignore[arg-type]
    except TypeError:
        return cap
    return n if cap is None else min(n, cap)
