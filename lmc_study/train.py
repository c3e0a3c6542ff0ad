"""Train the models the study compares: ViTs on images, GPT-2s on text, one per seed.

The recipes are the paper's (SPEC Table 3), read from a profile:

- AdamW. Weight decay only on the weight matrices of linear maps (Linear, HF's Conv1D, the patch
  embedding's Conv2d, the heads); none on biases, LayerNorm parameters, token/position
  embeddings and the class token: decaying those shrinks features with no regularising benefit
  (the usual nanoGPT / timm practice; the paper does not say).
- Learning rate per step: linear warmup then cosine decay to 0, or torch's one-cycle when the
  recipe says "onecycle" (warmup_epochs / epochs is its rising fraction).
- ViT: random crop (padding ``recipe.pad``), flip and, for RGB, colour jitter on the device (unless the recipe turns
  augmentation off), a fresh seeded data order every epoch.
- Validation loss after every epoch; the best epoch's weights are returned. ViT: on
  ``vit.val_images`` images held out of the train split (``image_splits``), every epoch run.
  GPT-2: on the text's validation split, early stopping after ``patience`` epochs without
  improvement.
- Seeds: ``torch.manual_seed(seed)`` before the model is built decides the initialisation and
  the dropout stream; epoch e's data order and augmentation come from the seed pair (seed, e).
  On CPU the same seed and thread count give bit-identical weights; another thread count gives
  weights within float rounding (torch splits its parallel reductions by thread count; tested to
  1e-4 on a tiny ViT, and the smoke profile's models come out bit-identical on 1 and 2 threads).
- GPU: bf16 autocast, TF32 matmuls, data resident on the device, optional torch.compile.
  CPU: float32 throughout.

With a CheckpointCache, a trained model is stored and later calls load it instead of training;
an interrupted run leaves a resume state (model, optimiser, schedule, RNG, best-so-far) that the
next call picks up, giving the same weights as an uninterrupted run on CPU.

Several seeds at once: ``train_models(..., at_once=True)`` (`train_stack`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.pytorch_utils import Conv1D

from lmc_core import distributed
from lmc_core.cache import CheckpointCache
from lmc_core.metrics import autocast_context, evaluate, model_logits
from lmc_core.progress import progress_bar
from lmc_core.schedules import make_scheduler

from .data import image_batches, load_token_dataset, token_batches
from .data.splits import image_splits, seeded_subset
from .models import build_model, count_parameters
from .profiles import Profile, resolve_device

# Bump when a change here changes the weights a given recipe and seed produce: the cache key
# includes it, so old entries are not mistaken for new ones.
TRAINER_VERSION = 1

Batches = Iterable[tuple[Tensor, Tensor | None]]


def model_spec(kind: str, profile: Profile, seed: int) -> dict[str, Any]:
    """Everything that decides a trained model's weights: its cache key is a hash of this."""
    if kind not in ("vit", "gpt2"):
        raise ValueError(f"unknown model kind {kind!r}; valid kinds: vit, gpt2")
    recipe = profile.vit if kind == "vit" else profile.gpt2
    return {
        "kind": kind,
        "recipe": dataclasses.asdict(recipe),
        "seed": int(seed),
        "trainer_version": TRAINER_VERSION,
    }


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of epoch ``epoch``'s data order: distinct for every (seed, epoch) pair."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay the weight matrices of linear maps, nothing else (module docstring)."""
    decay = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d | Conv1D)}
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if id(p) in decay], "weight_decay": weight_decay},
        {"params": [p for p in params if id(p) not in decay], "weight_decay": 0.0},
    ]


@dataclasses.dataclass
class _Task:
    """What the training loop needs to know about one model kind."""

    build: dict[str, int]  # build_model's shape arguments, kept in the cache metadata
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    schedule: str
    warmup_steps: Callable[[int], int]  # steps per epoch -> warmup steps
    label_smoothing: float
    compile: bool
    train_batches: Callable[[int], Batches]  # epoch -> that epoch's batches
    steps_per_epoch: int
    items_per_batch: Callable[[Tensor], int]  # images, or tokens, in a batch
    val_batches: Batches | None  # None: no early stopping
    patience: int
    test_batches: Batches  # the profile's evaluation subset: test metrics in the metadata


def _vit_task(profile: Profile, seed: int, device: torch.device) -> _Task:
    r = profile.vit
    train, val, test = image_splits(profile)

    def train_batches(epoch: int) -> Batches:
        return image_batches(train, r.batch_size, device=device, shuffle=True,
                             augment=r.augment, pad=r.pad, seed=epoch_seed(seed, epoch))

    return _Task(
        build={"num_classes": train.num_classes, "in_chans": train.in_chans,
               "img_size": train.img_size},
        epochs=r.epochs, batch_size=r.batch_size, lr=r.lr, weight_decay=r.weight_decay,
        schedule=r.schedule, warmup_steps=lambda spe: round(r.warmup_epochs * spe),
        label_smoothing=r.label_smoothing, compile=r.compile,
        train_batches=train_batches, steps_per_epoch=len(train_batches(0)),
        items_per_batch=lambda x: x.shape[0],
        # patience 0: every epoch runs; the epoch with the best validation loss is kept.
        val_batches=image_batches(val, profile.eval.batch_size, device=device, shuffle=False), patience=0,
        test_batches=image_batches(test, profile.eval.batch_size, device=device, shuffle=False),
    )


def _gpt2_task(profile: Profile, seed: int, device: torch.device) -> _Task:
    r = profile.gpt2
    tokens = load_token_dataset(r.corpus, r.tokenizer)
    train = tokens.blocks("train", r.block_size)
    train = seeded_subset(train, r.train_blocks)
    val = seeded_subset(tokens.blocks("val", r.block_size), r.val_blocks)

    def train_batches(epoch: int) -> Batches:
        return token_batches(train, r.batch_size, device=device, shuffle=True,
                             seed=epoch_seed(seed, epoch))

    def fixed(blocks: Tensor) -> Batches:
        return token_batches(blocks, profile.eval.batch_size, device=device, shuffle=False)

    return _Task(
        build={"vocab_size": tokens.vocab_size},
        epochs=r.max_epochs, batch_size=r.batch_size, lr=r.lr, weight_decay=r.weight_decay,
        schedule="cosine", warmup_steps=lambda spe: r.warmup_steps,
        label_smoothing=0.0, compile=r.compile,
        train_batches=train_batches, steps_per_epoch=len(train_batches(0)),
        items_per_batch=lambda x: x.shape[0] * (x.shape[1] - 1),
        val_batches=fixed(val), patience=r.patience,
        test_batches=fixed(seeded_subset(tokens.blocks("test", r.block_size),
                                          profile.eval.test_blocks)),
    )


def _train_loss(logits: Tensor, inputs: Tensor, targets: Tensor | None, smoothing: float) -> Tensor:
    """Mean cross-entropy in float32; targets None means next-token prediction."""
    if targets is None:
        logits, targets = logits[:, :-1], inputs[:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                           label_smoothing=smoothing)


def _clone_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _rng_state(device: torch.device) -> dict[str, Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _train_epoch(
    fwd: nn.Module,
    task: _Task,
    epoch: int,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    bar: Any,
    progress: bool,
) -> dict[str, Any]:
    """One pass over the epoch's batches; returns the epoch's record for the history."""
    loss_sum = torch.zeros((), device=device)  # summed on the device: one sync per epoch
    items, t0 = 0, time.perf_counter()
    for step, (x, y) in enumerate(task.train_batches(epoch)):
        xs, ys, weight = distributed.shard(x, y)  # under torchrun: this process's slice of the batch
        with autocast_context(device):
            logits = model_logits(fwd, xs)
        loss = _train_loss(logits, xs, ys, task.label_smoothing) * weight
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_sum += loss.detach()
        items += task.items_per_batch(x)
        bar.update()
        if progress and step % 50 == 0:  # .item() syncs the GPU: not every step
            rate = items / (time.perf_counter() - t0)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}", per_s=f"{rate:,.0f}")
    return {
        "epoch": epoch + 1,
        "train_loss": distributed.mean(loss_sum) / task.steps_per_epoch,
        "items_per_s": items / (time.perf_counter() - t0),
        "lr": scheduler.get_last_lr()[0],
    }


def _load_cached(
    kind: str, profile: Profile, spec: dict[str, Any], cache: CheckpointCache | None,
    device: torch.device,
) -> nn.Module | None:
    """The cached model of ``spec`` in eval mode, or None on a miss (or without a cache)."""
    if cache is None or (hit := cache.load(spec)) is None:
        return None
    state, meta = hit
    model = build_model(kind, profile, **meta["build"])
    model.load_state_dict(state)
    model.lmc_meta = {**meta, "from_cache": True}
    return model.to(device).eval()


def _stops_before(task: _Task, best_epoch: int, epoch: int) -> bool:
    """Whether training ends before epoch ``epoch`` (0-based): all epochs run, or early stopping
    (checked before an epoch, so a resumed run stops where it would have)."""
    if epoch >= task.epochs:
        return True
    return task.patience > 0 and best_epoch >= 0 and epoch - 1 - best_epoch >= task.patience


def _finish(
    kind: str, seed: int, spec: dict[str, Any], task: _Task, model: nn.Module,
    best: dict[str, Any], history: list[dict[str, Any]], wall_before: float, t_start: float,
    device: torch.device, cache: CheckpointCache | None, **extra_meta: Any,
) -> nn.Module:
    """Load the best epoch's weights, measure the test metrics, store the model in the cache
    (dropping its resume state) and return it in eval mode with ``lmc_meta``."""
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    model.eval()
    test = evaluate(model, task.test_batches)
    meta = {
        "kind": kind,
        "seed": int(seed),
        "build": task.build,
        "n_params": count_parameters(model),
        "epochs_run": len(history),
        "best_epoch": best["epoch"] + 1 if best["state"] is not None else len(history),
        "best_val_loss": best["val_loss"] if best["state"] is not None else None,
        "final_val_loss": history[-1].get("val_loss") if history else None,
        "final_train_loss": history[-1]["train_loss"] if history else None,
        "test_loss": test["loss"],
        "test_accuracy": test["accuracy"],
        "test_items": test["items"],
        "wall_s": wall_before + time.perf_counter() - t_start,
        "device": str(device),
        "torch": torch.__version__,
        "history": history,
        **extra_meta,
    }
    if cache is not None and distributed.is_main():
        cache.save(spec, model, meta)
        cache.clear_resume(spec)
    model.lmc_meta = {**meta, "from_cache": False}
    return model


def train_model(
    kind: str,
    profile: Profile,
    seed: int,
    *,
    device: torch.device | str | None = None,
    cache: CheckpointCache | None = None,
    progress: bool = True,
    resume_interval_s: float = 30.0,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> nn.Module:
    """Train (or load from ``cache``) the ``kind`` model ("vit" or "gpt2") of ``profile`` for
    ``seed``; returns it in eval mode with its training metadata in ``model.lmc_meta``.

    ``device`` defaults to the profile's. With a cache, a resume state is written at the end of
    an epoch when ``resume_interval_s`` seconds passed since the last one (0: every epoch).
    ``on_epoch_end(epoch, record)`` is called after each epoch's bookkeeping (and resume write).
    """
    device = torch.device(device) if device is not None else resolve_device(profile)
    spec = model_spec(kind, profile, seed)
    if (cached := _load_cached(kind, profile, spec, cache, device)) is not None:
        return cached

    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32: bf16 autocast covers the rest
    task = _vit_task(profile, seed, device) if kind == "vit" else _gpt2_task(profile, seed, device)
    torch.manual_seed(seed)
    model = build_model(kind, profile, **task.build).to(device)
    optimizer = torch.optim.AdamW(param_groups(model, task.weight_decay), lr=task.lr,
                                  fused=device.type == "cuda")
    total_steps = task.epochs * task.steps_per_epoch
    scheduler = make_scheduler(optimizer, task.schedule, task.lr, total_steps,
                               task.warmup_steps(task.steps_per_epoch))
    fwd = distributed.wrap(model, seed)  # DistributedDataParallel under torchrun, else the model
    fwd = torch.compile(fwd) if task.compile and device.type == "cuda" else fwd

    start_epoch, history, wall_before = 0, [], 0.0
    best: dict[str, Any] = {"val_loss": math.inf, "epoch": -1, "state": None}
    resume = cache.load_resume(spec) if cache is not None else None
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        _set_rng_state(resume["rng"], device)
        start_epoch, history, wall_before = resume["epoch"], resume["history"], resume["wall_s"]
        best = resume["best"]
        if best["state"] is not None:
            best["state"] = {k: v.to(device) for k, v in best["state"].items()}

    t_start = last_resume_write = time.perf_counter()
    model.train()
    with progress_bar(total=total_steps, initial=start_epoch * task.steps_per_epoch, disable=not (progress and distributed.is_main()),
              desc=f"{kind} seed {seed}", unit="step", mininterval=2.0, dynamic_ncols=True) as bar:
        for epoch in range(start_epoch, task.epochs):
            if _stops_before(task, best["epoch"], epoch):
                break
            record = _train_epoch(fwd, task, epoch, optimizer, scheduler, device, bar, progress)
            if task.val_batches is not None:
                val = evaluate(model, task.val_batches)
                record["val_loss"], record["val_accuracy"] = val["loss"], val["accuracy"]
                if record["val_loss"] < best["val_loss"]:
                    best = {"val_loss": record["val_loss"], "epoch": epoch,
                            "state": _clone_state(model)}
                bar.set_postfix(epoch=epoch + 1, val=f"{record['val_loss']:.3f}",
                                best=f"{best['val_loss']:.3f}")
            history.append(record)
            now = time.perf_counter()
            if cache is not None and distributed.is_main() and now - last_resume_write >= resume_interval_s:
                cache.save_resume(spec, {
                    "epoch": epoch + 1, "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "rng": _rng_state(device), "best": best, "history": history,
                    "wall_s": wall_before + now - t_start,
                })
                last_resume_write = now
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, record)

    return _finish(kind, seed, spec, task, model, best, history, wall_before, t_start, device,
                   cache)


def train_models(
    kind: str,
    profile: Profile,
    seeds: Sequence[int],
    *,
    at_once: bool = False,
    **kwargs: Any,
) -> list[nn.Module]:
    """``train_model`` for each seed (keyword arguments passed on), one after another or, with
    ``at_once``, the seeds missing from the cache as one stacked ensemble (module docstring).

    At once, the cache entries (with dropout: keys that also name the stack, ``at_once_spec``),
    resume states, per-seed metadata (plus ``"at_once"``: how many seeds were stacked, and
    ``"at_once_seeds"``: which) and histories are train_model's; ``on_epoch_end(epoch, record)``
    is called once per seed still training, in the order of ``seeds``. When the resume states
    are at different epochs, every resumed seed is finished one by one with train_model and the
    fresh ones are trained at once. Not under torchrun (ValueError); the recipe's
    ``compile`` is ignored (the vmapped step is not compiled).
    """
    if not at_once:
        return [train_model(kind, profile, seed, **kwargs) for seed in seeds]
    from .train_stack import train_at_once  # train_stack builds on this module

    models = train_at_once(kind, profile, list(dict.fromkeys(seeds)), **kwargs)
    seen: set[int] = set()
    out = []
    for seed in seeds:  # a repeated seed gets its own copy, as one-by-one training gives
        out.append(models[seed] if seed not in seen else copy.deepcopy(models[seed]))
        seen.add(seed)
    return out
