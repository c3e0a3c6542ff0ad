"""Several seeds trained at once (``train.train_models(..., at_once=True)``): the seeds missing from the cache
train as one ensemble, their parameters stacked along a new leading axis
(``torch.func.stack_module_state``) and run by one ``torch.vmap``-ed forward: a GPU then does
one large kernel where it would do M small ones (a CPU does the same work, and is no faster).
Each seed keeps what it has alone: its initialisation, data order and augmentation, validation
and best epoch, early stopping (a stopped seed is finished, cached and dropped from the stack)
and test metrics. The sum of the seeds' losses gives each slice its own gradient and AdamW is
elementwise, so one optimiser over the stack takes each seed's own step: without dropout, a
seed's model is train_model's up to the order of floating-point sums (batched matmuls). With
dropout > 0 the stack draws the masks from one stream, so a model is equal to train_model's in
distribution, not sample by sample, and depends on which seeds shared the stack: its cache key
then names them (``at_once_spec``). Otherwise cache entries and resume states are train_model's,
per seed. No torch.compile, no torchrun.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from lmc_core import distributed
from lmc_core.cache import CheckpointCache
from lmc_core.metrics import autocast_context, evaluate
from lmc_core.progress import progress_bar
from lmc_core.schedules import make_scheduler

from .models import build_model
from .profiles import Profile, resolve_device
from .train import (
    _clone_state,
    _finish,
    _gpt2_task,
    _load_cached,
    _rng_state,
    _set_rng_state,
    _stops_before,
    _Task,
    _vit_task,
    model_spec,
    param_groups,
    train_model,
)


def _stacked_train_loss(logits: Tensor, inputs: Tensor, targets: Tensor | None,
                        smoothing: float) -> Tensor:
    """(M,) _train_loss of each member (leading axis), from one cross-entropy over all of them."""
    if targets is None:
        logits, targets = logits[:, :, :-1], inputs[:, :, 1:]
    losses = F.cross_entropy(logits.flatten(0, -2).float(), targets.flatten(),
                             reduction="none", label_smoothing=smoothing)
    return losses.view(len(inputs), -1).mean(dim=1)


@dataclasses.dataclass(eq=False)
class _Member:
    """One seed of an at-once run: what train_model keeps for it, outside the stack."""

    seed: int
    spec: dict[str, Any]
    task: _Task
    model: nn.Module  # the seed's weights between epochs: validation, best state, files
    best: dict[str, Any]
    history: list[dict[str, Any]]
    wall_before: float  # seconds spent before a resume


@dataclasses.dataclass
class _Stack:
    """The members' parameters stacked along a new leading axis, one AdamW over them."""

    base: nn.Module  # on the meta device: the template functional_call runs
    params: dict[str, Tensor]
    buffers: dict[str, Tensor]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler


def at_once_spec(kind: str, profile: Profile, seed: int, stack: Sequence[int]) -> dict[str, Any]:
    """The cache key of seed ``seed`` trained at once with the seeds ``stack``: train_model's,
    unless the recipe draws dropout masks. Those come from one stream shared by the stack, so the
    model then depends on which seeds it trained with: its key names them, and train_model's
    model for the seed is never mistaken for it (nor the other way round)."""
    spec = model_spec(kind, profile, seed)
    if kind == "gpt2" and profile.gpt2.dropout > 0:
        spec["stack"] = sorted({int(s) for s in stack})
    return spec


def _member(kind: str, profile: Profile, seed: int, spec: dict[str, Any], device: torch.device,
            resume: dict[str, Any] | None) -> _Member:
    """Seed ``seed``'s task and model, built exactly as train_model builds them."""
    task = _vit_task(profile, seed, device) if kind == "vit" else _gpt2_task(profile, seed, device)
    torch.manual_seed(seed)
    model = build_model(kind, profile, **task.build).to(device)
    member = _Member(seed, spec, task, model,
                     {"val_loss": math.inf, "epoch": -1, "state": None}, [], 0.0)
    if resume is not None:
        model.load_state_dict(resume["model"])
        member.history, member.wall_before, member.best = (resume["history"], resume["wall_s"],
                                                           resume["best"])
        if member.best["state"] is not None:
            member.best["state"] = {k: v.to(device) for k, v in member.best["state"].items()}
    return member


def _stacked_optimizer_state(states: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-seed AdamW state dicts -> the stacked optimizer's (moments stacked, step shared:
    every seed has taken the same number of steps)."""
    stacked = {i: {k: v if k == "step" else torch.stack([s["state"][i][k] for s in states])
                   for k, v in st.items()}
               for i, st in states[0]["state"].items()}
    return {"state": stacked, "param_groups": states[0]["param_groups"]}


def _seed_optimizer_state(optimizer: torch.optim.Optimizer, j: int) -> dict[str, Any]:
    """Member ``j``'s slice of the stacked AdamW state: the state dict its own AdamW would have
    (same parameter indices, groups and hyperparameters)."""
    sd = optimizer.state_dict()
    state = {i: {k: v.clone() if k == "step" else v[j].clone() for k, v in st.items()}
             for i, st in sd["state"].items()}
    return {"state": state, "param_groups": copy.deepcopy(sd["param_groups"])}


def _stack(members: list[_Member], device: torch.device,
           optimizer_states: list[dict[str, Any]] | None,
           scheduler_state: dict[str, Any] | None) -> _Stack:
    """Stack the members' current weights; AdamW with train_model's groups, hyperparameters and
    schedule, continuing from the given per-seed optimizer and the schedule's states if any."""
    task, template = members[0].task, members[0].model
    params, buffers = torch.func.stack_module_state([m.model for m in members])
    # param_groups decides decay by module identity: map its groups onto the stack by name.
    names = {id(p): name for name, p in template.named_parameters()}
    groups = [{**g, "params": [params[names[id(p)]] for p in g["params"]]}
              for g in param_groups(template, task.weight_decay)]
    optimizer = torch.optim.AdamW(groups, lr=task.lr, fused=device.type == "cuda")
    scheduler = make_scheduler(optimizer, task.schedule, task.lr,
                               task.epochs * task.steps_per_epoch,
                               task.warmup_steps(task.steps_per_epoch))
    if optimizer_states is not None:
        optimizer.load_state_dict(_stacked_optimizer_state(optimizer_states))
    if scheduler_state is not None:
        scheduler.load_state_dict(scheduler_state)
    base = copy.deepcopy(template).to("meta").train()
    return _Stack(base, params, buffers, optimizer, scheduler)


@torch.no_grad()
def _unstack(stack: _Stack, members: list[_Member]) -> None:
    """Copy each member's slice of the stack into its own model."""
    stacked = {**stack.params, **stack.buffers}
    for j, m in enumerate(members):
        for name, t in itertools.chain(m.model.named_parameters(), m.model.named_buffers()):
            t.copy_(stacked[name][j])


def _stacked_logits(stack: _Stack, x: Tensor) -> Tensor:
    """(M, B, ...) logits: member j's model on its batch x[j], all M in one vmapped forward.
    ``randomness="different"``: each member draws its own dropout masks."""
    def logits(params: dict[str, Tensor], buffers: dict[str, Tensor], xj: Tensor) -> Tensor:
        out = torch.func.functional_call(stack.base, (params, buffers), (xj,))
        return out.logits if hasattr(out, "logits") else out

    # torch has no vmap rule for the CPU flash-attention kernel (vmap would loop over the
    # members, a quarter slower for the smoke ViT); its math kernel batches. CUDA's have rules.
    cpu = x.device.type == "cpu"
    with sdpa_kernel(SDPBackend.MATH) if cpu else contextlib.nullcontext():
        return torch.vmap(logits, randomness="different")(stack.params, stack.buffers, x)


def _train_epoch_at_once(
    stack: _Stack, members: list[_Member], epoch: int, device: torch.device, bar: Any,
    progress: bool,
) -> list[dict[str, Any]]:
    """One epoch of every member on its own batches; returns each member's history record."""
    task = members[0].task  # the recipe's: the same for every seed but for the data order
    loss_sums = torch.zeros(len(members), device=device)
    items, t0 = 0, time.perf_counter()
    batches = zip(*(m.task.train_batches(epoch) for m in members), strict=True)
    for step, per_seed in enumerate(batches):
        x = torch.stack([xj for xj, _ in per_seed])
        y = None if per_seed[0][1] is None else torch.stack([yj for _, yj in per_seed])
        with autocast_context(device):
            logits = _stacked_logits(stack, x)
        losses = _stacked_train_loss(logits, x, y, task.label_smoothing)
        stack.optimizer.zero_grad(set_to_none=True)
        # Member j's loss depends on its own slice only, so the sum's gradient is, slice by
        # slice, each member's own gradient; AdamW is elementwise, so one step over the stack
        # is each member's own step.
        losses.sum().backward()
        stack.optimizer.step()
        stack.scheduler.step()
        loss_sums += losses.detach()
        items += task.items_per_batch(per_seed[0][0])
        bar.update()
        if progress and step % 50 == 0:
            rate = len(members) * items / (time.perf_counter() - t0)
            bar.set_postfix(epoch=epoch + 1, loss=f"{losses.mean().item():.3f}",
                            per_s=f"{rate:,.0f}")
    seconds, lr = time.perf_counter() - t0, stack.scheduler.get_last_lr()[0]
    # items_per_s is each seed's own: the stack's throughput is the sum over its members.
    return [{"epoch": epoch + 1, "train_loss": s / task.steps_per_epoch,
             "items_per_s": items / seconds, "lr": lr} for s in loss_sums.tolist()]


def train_at_once(
    kind: str,
    profile: Profile,
    seeds: list[int],
    *,
    device: torch.device | str | None = None,
    cache: CheckpointCache | None = None,
    progress: bool = True,
    resume_interval_s: float = 30.0,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[int, nn.Module]:
    """Each distinct seed's model: from the cache, one by one (resume states at mismatched
    epochs) or trained in one stack."""
    if distributed.active():
        raise ValueError("train_models(at_once=True) does not run under torchrun: train the "
                         "seeds one by one (at_once=False), each one data-parallel")
    device = torch.device(device) if device is not None else resolve_device(profile)
    models: dict[int, nn.Module] = {}
    resumes: dict[int, dict[str, Any] | None] = {}
    for seed in seeds:
        spec = at_once_spec(kind, profile, seed, seeds)
        if (cached := _load_cached(kind, profile, spec, cache, device)) is not None:
            models[seed] = cached
        else:
            resumes[seed] = cache.load_resume(spec) if cache is not None else None
    if len({r["epoch"] if r else 0 for r in resumes.values()}) > 1:
        # A stack steps every member together: a seed that is epochs ahead finishes alone.
        for seed in [s for s, r in resumes.items() if r is not None]:
            del resumes[seed]
            models[seed] = train_model(kind, profile, seed, device=device, cache=cache,
                                       progress=progress, resume_interval_s=resume_interval_s,
                                       on_epoch_end=on_epoch_end)
    if resumes:
        specs = {seed: at_once_spec(kind, profile, seed, seeds) for seed in resumes}
        models.update(_train_stack(kind, profile, resumes, specs, device, cache, progress,
                                   resume_interval_s, on_epoch_end))
    return models


def _train_stack(
    kind: str,
    profile: Profile,
    resumes: dict[int, dict[str, Any] | None],
    specs: dict[int, dict[str, Any]],
    device: torch.device,
    cache: CheckpointCache | None,
    progress: bool,
    resume_interval_s: float,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None,
) -> dict[int, nn.Module]:
    """Train the seeds of ``resumes`` (all resumed at the same epoch, or all fresh) as one
    stack; a seed that stops early is finished and dropped from the stack."""
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
    members = [_member(kind, profile, seed, specs[seed], device, r) for seed, r in resumes.items()]
    n_stacked, task = len(members), members[0].task
    first = next(iter(resumes.values()))
    start_epoch = first["epoch"] if first is not None else 0
    if first is not None:
        _set_rng_state(first["rng"], device)  # the dropout stream the stack had drawn so far
        stack = _stack(members, device, [r["optimizer"] for r in resumes.values()],
                       first["scheduler"])
    else:
        stack = _stack(members, device, None, None)

    done: dict[int, nn.Module] = {}
    t_start = last_resume_write = time.perf_counter()

    def finish(m: _Member) -> nn.Module:
        return _finish(kind, m.seed, m.spec, m.task, m.model, m.best, m.history,
                       m.wall_before, t_start, device, cache, at_once=n_stacked,
                       at_once_seeds=sorted(resumes))

    with progress_bar(total=task.epochs * task.steps_per_epoch,
                      initial=start_epoch * task.steps_per_epoch, disable=not progress,
                      desc=f"{kind} seeds {list(resumes)} at once", unit="step",
                      mininterval=2.0, dynamic_ncols=True) as bar:
        for epoch in range(start_epoch, task.epochs):
            stops = [_stops_before(m.task, m.best["epoch"], epoch) for m in members]
            if any(stops):  # finish those seeds and go on without them
                keep = [j for j, stop in enumerate(stops) if not stop]
                states = [_seed_optimizer_state(stack.optimizer, j) for j in keep]
                done.update({members[j].seed: finish(members[j])
                             for j, stop in enumerate(stops) if stop})
                members = [members[j] for j in keep]
                if not members:
                    break
                stack = _stack(members, device, states, stack.scheduler.state_dict())
            records = _train_epoch_at_once(stack, members, epoch, device, bar, progress)
            _unstack(stack, members)
            for m, record in zip(members, records, strict=True):
                _validate(m, record, epoch)
            now = time.perf_counter()
            if cache is not None and now - last_resume_write >= resume_interval_s:
                for j, m in enumerate(members):
                    cache.save_resume(m.spec, {
                        "epoch": epoch + 1, "model": m.model.state_dict(),
                        "optimizer": _seed_optimizer_state(stack.optimizer, j),
                        "scheduler": stack.scheduler.state_dict(), "rng": _rng_state(device),
                        "best": m.best, "history": m.history,
                        "wall_s": m.wall_before + now - t_start,
                    })
                last_resume_write = now
            if on_epoch_end is not None:
                for record in records:
                    on_epoch_end(epoch + 1, record)
    done.update({m.seed: finish(m) for m in members})
    return done


def _validate(m: _Member, record: dict[str, Any], epoch: int) -> None:
    """train_model's per-epoch bookkeeping: validation loss, best epoch, history."""
    if m.task.val_batches is not None:
        val = evaluate(m.model, m.task.val_batches)
        record["val_loss"], record["val_accuracy"] = val["loss"], val["accuracy"]
        if record["val_loss"] < m.best["val_loss"]:
            m.best = {"val_loss": record["val_loss"], "epoch": epoch,
                      "state": _clone_state(m.model)}
    m.history.append(record)
