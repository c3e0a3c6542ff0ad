"""Alignment of Transformers on the canonical form (SPEC section 4): model A is the reference,
only B is transformed.

    align(model_a, model_b, "weight_matching")                      # data-free, iterated
    align(model_a, model_b, "activation_matching", data=batches)    # Verma & Elbayad (2024)
    align(model_a, model_b, "learned_matching", data=train, eval_data=test)   # Algorithm 1
    align(model_a, model_b, "soft", data=train)                     # Sinkhorn relaxation
    align_many([m1, m2, m3], "learned_matching", data=train)        # universe + refinement

A narrower B (residual width, heads or MLP units) is first lifted exactly into A's shape, eps
and softmax scales (`width.lift_width`), then aligned as usual.

`recipe="official"` switches every option in which the authors' released code differs from ours
and that changes results (RECIPES; ../shared/OFFICIAL-CODE.md) to the authors' value; options
given explicitly still win. Learned matching then also needs `val_data` (validation batches:
the authors keep the latents of lowest validation loss).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..adapters import canonicalize
from ..canonical import CanonicalTransformer
from ..interpolation import barrier
from ..symmetry import Symmetry
from .activation_matching import activation_matching
from .learned import LAMBDA_SAMPLERS, LatentSymmetry, learn
from .multi import universe_matching
from .weight_matching import weight_matching
from .width import lift_width, needs_lift

METHODS = ("weight_matching", "activation_matching", "learned_matching", "soft")
OPTIONS: dict[str, Any] = {
    "residual": "orthogonal",  # or "permutation": the paper's ablation (LM-perm, WM-perm)
    "keep_centred": False,  # orthogonal maps fix the all-ones direction, so B stays exportable (lmc_core.export)
    "iterations": 15,  # weight-matching iterations (also the init of learned matching)
    "init": "weight_matching",  # learned matching starts from weight matching, or "identity"
    "lambda_sampler": "uniform_0.4_0.6",
    "epochs": 2,
    "steps_per_epoch": None,
    "lr": 1e-3,  # the orthogonal map's latent (and soft matching's)
    "perm_lr": None,  # hard permutation latents (None: lr); they start one-hot, see align.learned
    "seed": 0,
    "eval_data": None,  # test batches: train/test barrier after every WM iteration / LM epoch (history)
    "train_eval_batches": 4,  # batches of `data` for the train barrier in the LM history
    "lambdas": 11,
    "samples": 1024,  # activation-matching items
    "tau": 0.05,  # Sinkhorn temperature
    "sinkhorn_iters": 200,  # at most; stops once every marginal is within sinkhorn_tol of 1
    "sinkhorn_tol": 1e-4,
    "alpha": 0.1,  # Dirichlet concentration (align_many)
    "universe_iterations": 5,
    "progress": False,
    # learned matching's objective in bf16 autocast: None on CUDA only, True also on CPU (align.learned)
    "autocast": None,
    # the authors' variations (RECIPES["official"]); the defaults are ours
    "weighting": "parameter",  # weight matching's Procrustes blocks: per parameter, or "layer"
    "head_cost": "squared",  # or "frobenius"
    "unit_cost": "inner",  # or "normalized_l1"
    "token_rows": None,  # token-table rows the Procrustes reads (None: all)
    "optimizer": "adam",  # learned matching: or "adamw"
    "weight_decay": 0.0,
    "schedule": "constant",  # or "warmup_cosine" (5% warmup)
    "clip_norm": None,
    "dropout": 0.0,  # inside the learned-matching objective
    "val_data": None,  # validation batches: keep the latents of lowest validation loss
    "val_every": 50,  # steps between validation checkpoints
    "init_noise": 0.0,  # std of the Gaussian added to the starting latents
}
# Where the authors' code differs from ours in ways that move the numbers (OFFICIAL-CODE.md). Not
# here: their learning-matching length (ours is the profile's, the same for both recipes, so a
# comparison isolates the recipe) and the token-row filter, off in their released pipeline.
RECIPES: dict[str, dict[str, Any]] = {
    "ours": {},
    "official": {
        "weighting": "layer", "head_cost": "frobenius", "unit_cost": "normalized_l1",
        "optimizer": "adamw", "lr": 3e-4, "weight_decay": 0.01, "schedule": "warmup_cosine",
        "clip_norm": 1.0, "dropout": 0.1, "val_every": 50, "init_noise": 0.01,
    },
}


@dataclass
class Alignment:
    """The result of `align`: `symmetry` maps canonical B (as given, before any lift) into A's
    frame; `model_b` is B aligned; `history` traces the method (barrier per weight-matching
    iteration, train/test barrier and loss per learned-matching epoch)."""

    method: str
    symmetry: Symmetry
    model_a: CanonicalTransformer
    model_b: CanonicalTransformer
    history: dict[str, list] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class MultiAlignment:
    """The result of `align_many`: every model mapped into one common frame."""

    method: str
    symmetries: list[Symmetry]
    models: list[CanonicalTransformer]
    history: dict[str, list] = field(default_factory=dict)


def recipe_options(recipe: str) -> dict[str, Any]:
    """The options a recipe ("ours" or "official") sets."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; valid: {', '.join(RECIPES)}")
    return dict(RECIPES[recipe])


def _options(method: str, options: dict[str, Any]) -> dict[str, Any]:
    if method not in METHODS:
        raise ValueError(f"unknown alignment method {method!r}; valid: {', '.join(METHODS)}")
    options = dict(options)
    recipe = options.pop("recipe", "ours")
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for align(); valid: recipe, {', '.join(OPTIONS)}")
    opts = {**OPTIONS, **recipe_options(recipe), **options, "recipe": recipe}
    if opts["residual"] not in ("orthogonal", "permutation"):
        raise ValueError(f"residual must be 'orthogonal' or 'permutation', got {opts['residual']!r}")
    if opts["init"] not in ("weight_matching", "identity"):
        raise ValueError(f"init must be 'weight_matching' or 'identity', got {opts['init']!r}")
    if opts["lambda_sampler"] not in LAMBDA_SAMPLERS:
        raise ValueError(f"unknown lambda_sampler {opts['lambda_sampler']!r}; valid: {', '.join(LAMBDA_SAMPLERS)}")
    return opts


def _canonical(model: nn.Module) -> CanonicalTransformer:
    return canonicalize(model) if not isinstance(model, CanonicalTransformer) else model


def _check_pair(a: CanonicalTransformer, b: CanonicalTransformer) -> None:
    ca, cb = a.config, b.config
    for name in ("task", "depth", "num_outputs", "causal", "patch_size", "in_chans", "img_size", "num_prefix",
                 "pool", "norm_after_pool", "activation"):
        if getattr(ca, name) != getattr(cb, name):
            raise ValueError(
                f"cannot align models that differ in {name} ({getattr(ca, name)!r} vs {getattr(cb, name)!r}); "
                "alignment maps one architecture onto the same architecture, up to width")
    if ca.task == "text" and ca.max_positions != cb.max_positions:
        raise ValueError(f"cannot align models with {ca.max_positions} and {cb.max_positions} positions")
    a_dtype, b_dtype = a.params()["qk"].dtype, b.params()["qk"].dtype
    if a_dtype != b_dtype:
        raise TypeError(f"models have different dtypes ({a_dtype} vs {b_dtype}); cast one to the other")


def _barrier_fn(model_a: CanonicalTransformer, model_b: CanonicalTransformer, data, lambdas):
    def evaluate(sym: Symmetry) -> float:
        return barrier(model_a, sym.apply(model_b), data, lambdas=lambdas).loss_barrier
    return evaluate


def _first_batches(data, n: int) -> list:
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        return [data]
    out = []
    for batch in data:
        out.append(batch)
        if len(out) >= n:
            break
    return out


def align(model_a: nn.Module, model_b: nn.Module, method: str = "weight_matching", data=None,
          **options: Any) -> Alignment:
    """Align B to A (raw timm ViT / HF GPT-2 or canonical models). See OPTIONS for the options
    and their defaults; `data` is an iterable of (inputs, targets) batches (targets None for
    language models) or one such pair, needed by activation and learned matching."""
    opts = _options(method, options)
    a, b_given = _canonical(model_a), _canonical(model_b)
    _check_pair(a, b_given)
    device = a.params()["qk"].device
    b_given = b_given.to(device)
    lift = lift_width(b_given, target=a.config, seed=opts["seed"])
    lifted = needs_lift(lift)
    b = lift.apply(b_given) if lifted else b_given
    eval_data, lambdas = opts["eval_data"], opts["lambdas"]
    history: dict[str, list] = {}

    if method == "activation_matching":
        if data is None:
            raise ValueError("activation_matching needs data (a batch of inputs)")
        found = activation_matching(a, b, data, samples=opts["samples"])
    else:
        found = None
        if method == "weight_matching" or opts["init"] == "weight_matching":
            on_iteration = None
            if eval_data is not None and method == "weight_matching":
                evaluate = _barrier_fn(a, b, eval_data, lambdas)
                on_iteration = lambda it, sym: {"loss_barrier": evaluate(sym)}  # noqa: E731
            found, history = weight_matching(a, b, iterations=opts["iterations"], residual=opts["residual"],
                                             on_iteration=on_iteration, keep_centred=opts["keep_centred"],
                                             weighting=opts["weighting"], head_cost=opts["head_cost"],
                                             unit_cost=opts["unit_cost"], token_rows=opts["token_rows"])
        if method in ("learned_matching", "soft"):
            if data is None:
                raise ValueError(f"{method} needs training data: data=<iterable of (inputs, targets) batches>")
            cfg = b.config
            latent = LatentSymmetry(
                found or Symmetry(), cfg.depth, cfg.width, cfg.num_heads, cfg.mlp_width,
                residual=opts["residual"], relaxation="soft" if method == "soft" else "hard", tau=opts["tau"],
                sinkhorn_iters=opts["sinkhorn_iters"], sinkhorn_tol=opts["sinkhorn_tol"], dtype=a.params()["qk"].dtype, device=device,
                keep_centred=opts["keep_centred"], noise=opts["init_noise"], seed=opts["seed"])
            on_epoch = _epoch_evaluator(a, b, data, eval_data, opts)
            if opts["recipe"] == "official" and opts["val_data"] is None:
                raise ValueError(f"recipe='official' keeps the {method} latents of lowest validation loss: "
                                 "pass val_data=<validation batches>, or val_data=False to keep the last ones")
            history = learn([a, b], [None, latent], data, epochs=opts["epochs"], lr=opts["lr"], perm_lr=opts["perm_lr"],
                            steps_per_epoch=opts["steps_per_epoch"], sampler=opts["lambda_sampler"],
                            seed=opts["seed"], on_epoch=on_epoch, progress=opts["progress"],
                            optimizer=opts["optimizer"], weight_decay=opts["weight_decay"], schedule=opts["schedule"],
                            clip_norm=opts["clip_norm"], dropout=opts["dropout"], val_data=opts["val_data"] or None,
                            val_every=opts["val_every"], autocast=opts["autocast"])
            found = latent.project()
    symmetry = lift.then(found) if lifted else found
    stored = {k: v for k, v in opts.items() if k not in ("eval_data", "val_data", "token_rows")}
    stored |= {"val_data": bool(opts["val_data"]),  # data are not options: whether given, and how many rows
               "token_rows": None if opts["token_rows"] is None else len(opts["token_rows"])}
    return Alignment(method, symmetry, a, found.apply(b), history, stored)


def _epoch_evaluator(a: CanonicalTransformer, b: CanonicalTransformer, data, eval_data, opts):
    """Train and test barrier of the current projection after every epoch, only when test data
    were given (`eval_data`): on a small run these evaluations cost more than the learning."""
    if eval_data is None:
        return None
    train_subset = _first_batches(data, opts["train_eval_batches"])
    def on_epoch(epoch: int, symmetries: list[Symmetry | None]) -> dict:
        aligned = symmetries[1].apply(b)
        result = barrier(a, aligned, eval_data, lambdas=opts["lambdas"])
        return {"train_barrier": barrier(a, aligned, train_subset, lambdas=opts["lambdas"]).loss_barrier,
                "test_barrier": result.loss_barrier, "test_loss_mid": result.losses[len(result.losses) // 2]}
    return on_epoch


def align_many(models: list[nn.Module], method: str = "learned_matching", data=None, **options: Any) -> MultiAlignment:
    """Align M models into one frame: universe matching ("weight_matching"), then learned
    refinement ("learned_matching", λ ~ Dirichlet(alpha·1)). All models need the same shape."""
    if method not in ("weight_matching", "learned_matching"):
        raise ValueError(f"align_many supports 'weight_matching' and 'learned_matching', got {method!r}")
    opts = _options(method, options)
    if opts["recipe"] != "ours":
        raise ValueError("align_many follows our recipe only: the authors' code has no multi-model alignment")
    canon = [_canonical(m) for m in models]
    if len(canon) < 2:
        raise ValueError("align_many needs at least two models")
    for other in canon[1:]:
        _check_pair(canon[0], other)
        if (other.width, other.num_heads, other.mlp_width) != (canon[0].width, canon[0].num_heads, canon[0].mlp_width):
            raise ValueError("align_many needs models of one shape; lift narrower models with align() first")
    symmetries, history = universe_matching(canon, iterations=opts["universe_iterations"],
                                            wm_iterations=opts["iterations"], residual=opts["residual"],
                                            keep_centred=opts["keep_centred"])
    if method == "learned_matching":
        if data is None:
            raise ValueError("learned refinement needs training data")
        cfg = canon[0].config
        latents = [LatentSymmetry(s, cfg.depth, cfg.width, cfg.num_heads, cfg.mlp_width, residual=opts["residual"],
                                  dtype=canon[0].params()["qk"].dtype, device=canon[0].params()["qk"].device,
                                  keep_centred=opts["keep_centred"])
                   for s in symmetries]
        refine = learn(canon, latents, data, epochs=opts["epochs"], lr=opts["lr"], perm_lr=opts["perm_lr"],
                       steps_per_epoch=opts["steps_per_epoch"], sampler="dirichlet", alpha=opts["alpha"],
                       seed=opts["seed"], progress=opts["progress"], autocast=opts["autocast"])
        history |= {f"refine_{k}": v for k, v in refine.items()}
        symmetries = [lat.project() for lat in latents]
    aligned = [s.apply(m) for s, m in zip(symmetries, canon, strict=True)]
    return MultiAlignment(method, symmetries, aligned, history)


__all__ = ["METHODS", "OPTIONS", "RECIPES", "Alignment", "MultiAlignment", "align", "align_many", "lift_width",
           "recipe_options"]
