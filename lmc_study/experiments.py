"""The study's experiments as functions, so the notebooks hold only parameters, calls, figures
and prose. Each function returns plain rows (dicts) that go straight into results.json.

Models come from the checkpoint cache (trained on first use); data are the same train split
and test subset the trainer uses, so every number is on the profile's evaluation set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lmc_core.alignment import Alignment, align, align_many
from lmc_core.alignment.weight_matching import weight_distance as relative_distance
from lmc_core.cache import CheckpointCache
from lmc_core.canonical import CanonicalTransformer
from lmc_core.interpolation import BarrierResult, barrier, simplex_barrier

from .data import image_batches, load_token_dataset, token_batches
from .data.splits import image_splits, seeded_subset
from .profiles import Profile
from .train import train_model

KINDS = ("vit", "gpt2")
# canonical_unaligned is the control for the change of space: every aligned method interpolates
# canonical weights, vanilla raw ones; this one interpolates canonical weights with nothing aligned.
PAIRWISE_METHODS = ("vanilla", "canonical_unaligned", "activation_matching", "weight_matching",
                    "learned_matching_permutation", "learned_matching")


@dataclass
class StudyData:
    """Batches for one model kind: `train` feeds learned and activation matching, `test` is the
    evaluation subset every barrier in the book is measured on, `val` the validation data every
    tuned value and checkpoint choice is made on (the images held out of training, or the text's
    validation split as the GPT-2's early stopping sees it)."""

    kind: str
    train: Any
    test: Any
    description: str
    val: Any = None


def test_blocks(tokens: Any, profile: Profile) -> torch.Tensor:
    """The GPT-2 test blocks every text number is measured on: the profile's seeded subset."""
    blocks = tokens.blocks("test", profile.gpt2.block_size)
    if profile.eval.test_blocks is not None:
        pick = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(0))
        blocks = blocks[pick[: profile.eval.test_blocks]]
    return blocks


def study_data(kind: str, profile: Profile, device: torch.device, seed: int = 0, *,
               with_test: bool = True) -> StudyData:
    """The training split (for alignment), the validation data and the profile's test subset (for
    barriers). ``with_test=False``: no test data at all (``test`` None), for code that tunes."""
    if kind == "vit":
        train, val, test = image_splits(profile, with_test=with_test)
        return StudyData(
            kind,
            image_batches(train, profile.align.lm_batch_size, device=device, shuffle=True, seed=seed),
            image_batches(test, profile.eval.batch_size, device=device, shuffle=False) if with_test else None,
            f"{profile.vit.dataset}: {len(test)} test images" if with_test else f"{profile.vit.dataset}: no test data",
            image_batches(val, profile.eval.batch_size, device=device, shuffle=False),
        )
    if kind == "gpt2":
        r = profile.gpt2
        tokens = load_token_dataset(r.corpus, r.tokenizer)
        train_blocks = tokens.blocks("train", r.block_size)
        test = test_blocks(tokens, profile) if with_test else None
        return StudyData(
            kind,
            token_batches(train_blocks, profile.align.lm_batch_size, device=device, shuffle=True, seed=seed),
            token_batches(test, profile.eval.batch_size, device=device, shuffle=False) if with_test else None,
            f"{r.corpus} ({r.tokenizer} tokens): "
            + (f"{len(test)} test blocks of {r.block_size}" if with_test else "no test data"),
            token_batches(seeded_subset(tokens.blocks("val", r.block_size), r.val_blocks), profile.eval.batch_size,
                          device=device, shuffle=False),
        )
    raise ValueError(f"unknown model kind {kind!r}; valid: {', '.join(KINDS)}")


def trained_models(kind: str, profile: Profile, seeds: list[int], device: torch.device,
                   progress: bool = True) -> list[nn.Module]:
    """The models of `seeds`, from the checkpoint cache ($LMC_CACHE_DIR) or trained now."""
    cache = CheckpointCache()
    return [train_model(kind, profile, seed, device=device, cache=cache, progress=progress) for seed in seeds]


def seed_pairs(n_pairs: int) -> list[tuple[int, int]]:
    """Independent pairs: (0, 1), (2, 3), ... — no model appears in two pairs."""
    return [(2 * i, 2 * i + 1) for i in range(n_pairs)]


def align_options(profile: Profile, **overrides: Any) -> dict[str, Any]:
    """The profile's alignment settings as `align` options. With `recipe` among the overrides,
    the settings that recipe fixes (the authors' learning rate, say) are its, not the profile's."""
    from lmc_core.alignment import recipe_options

    a = profile.align
    defaults = {"iterations": a.wm_iterations, "epochs": a.lm_epochs, "steps_per_epoch": a.lm_steps_per_epoch,
                "lr": a.lm_lr, "lambda_sampler": a.lambda_sampler, "samples": a.am_samples, "tau": a.sinkhorn_tau,
                "sinkhorn_iters": a.sinkhorn_iters, "sinkhorn_tol": a.sinkhorn_tol, "alpha": a.multi_alpha,
                "universe_iterations": a.universe_iterations, "lambdas": profile.experiment.lambdas}
    fixed = recipe_options(overrides["recipe"]) if "recipe" in overrides else {}
    return {**{k: v for k, v in defaults.items() if k not in fixed}, **overrides}


def align_by_name(method: str, model_a: nn.Module, model_b: nn.Module, profile: Profile, data: StudyData,
                  **overrides: Any) -> Alignment | None:
    """One of the book's method names (None for vanilla: nothing to align; the identity symmetry
    on the canonical forms for canonical_unaligned: nothing trained or matched)."""
    opts = align_options(profile, **overrides)
    if method == "vanilla":
        return None
    if method == "canonical_unaligned":
        from lmc_core.adapters import canonicalize
        from lmc_core.symmetry import Symmetry

        return Alignment(method, Symmetry(), canonicalize(model_a), canonicalize(model_b))
    if method == "activation_matching":
        return align(model_a, model_b, "activation_matching", data=data.train, **opts)
    if method == "weight_matching":
        return align(model_a, model_b, "weight_matching", **opts)
    if method == "weight_matching_permutation":
        return align(model_a, model_b, "weight_matching", **{**opts, "residual": "permutation"})
    if method == "learned_matching_permutation":
        return align(model_a, model_b, "learned_matching", data=data.train,
                     **{"perm_lr": profile.align.lm_perm_lr, **opts, "residual": "permutation"})
    if method == "learned_matching":
        return align(model_a, model_b, "learned_matching", data=data.train, **opts)
    if method == "soft":
        return align(model_a, model_b, "soft", data=data.train, **opts)
    raise ValueError(f"unknown method {method!r}; valid: {', '.join((*PAIRWISE_METHODS, 'weight_matching_permutation', 'soft'))}")


def result_row(method: str, models: list[int], result: BarrierResult, **extra: Any) -> dict[str, Any]:
    """One results.json row."""
    return {"method": method, "models": models, "loss_barrier": result.loss_barrier,
            "acc_barrier": result.acc_barrier, "loss_a": result.loss_a, "loss_b": result.loss_b,
            "acc_a": result.acc_a, "acc_b": result.acc_b, "lambdas": result.lambdas, "losses": result.losses,
            "accuracies": result.accuracies, **extra}


def pairwise(kind: str, profile: Profile, device: torch.device, methods: tuple[str, ...] = PAIRWISE_METHODS,
             progress: bool = True) -> tuple[list[dict[str, Any]], dict[tuple[int, int], dict[str, Alignment]]]:
    """Table 2 for one model kind: every method on every independent pair. Returns the rows and
    the alignments (by pair, by method) for the figures that look inside them."""
    data = study_data(kind, profile, device)
    rows, alignments = [], {}
    for sa, sb in seed_pairs(profile.experiment.n_pairs):
        model_a, model_b = trained_models(kind, profile, [sa, sb], device, progress)
        alignments[(sa, sb)] = {}
        for method in methods:
            found = align_by_name(method, model_a, model_b, profile, data)
            if found is None:
                result = barrier(model_a, model_b, data.test, lambdas=profile.experiment.lambdas)
            else:
                alignments[(sa, sb)][method] = found
                result = barrier(found.model_a, found.model_b, data.test, lambdas=profile.experiment.lambdas)
            rows.append(result_row(method, [sa, sb], result))
    return rows, alignments


def weight_matching_iterations(model_a: nn.Module, model_b: nn.Module, profile: Profile, data: StudyData,
                               iterations: int | None = None, lambdas: int | None = None
                               ) -> dict[str, dict[str, list]]:
    """Fig. 7: barrier after every weight-matching iteration, orthogonal vs permutation residual
    (`lambdas`: points of the λ grid of each barrier; default the profile's)."""
    iterations = iterations or profile.align.wm_iterations
    return {residual: align(model_a, model_b, "weight_matching", **align_options(
        profile, residual=residual, iterations=iterations, eval_data=data.test,
        lambdas=lambdas or profile.experiment.lambdas)).history
        for residual in ("orthogonal", "permutation")}


def learned_matching_inits(model_a: nn.Module, model_b: nn.Module, profile: Profile, data: StudyData,
                           epochs: int | None = None, lambdas: int | None = None) -> dict[str, dict[str, list]]:
    """Fig. 8: train/test barrier per learned-matching epoch from weight-matching vs identity init
    (`lambdas`: points of the λ grid of each barrier; default the profile's)."""
    epochs = epochs or profile.align.lm_epochs
    return {init: align(model_a, model_b, "learned_matching", data=data.train, **align_options(
        profile, init=init, epochs=epochs, eval_data=data.test,
        lambdas=lambdas or profile.experiment.lambdas)).history
        for init in ("weight_matching", "identity")}


def lambda_samplers(model_a: nn.Module, model_b: nn.Module, profile: Profile, data: StudyData,
                    samplers: tuple[str, ...] = ("fixed_0.5", "uniform_0.4_0.6", "uniform_0_1", "normal_0.5_0.1"),
                    models: list[int] | None = None, lambdas: int | None = None) -> list[dict[str, Any]]:
    """Fig. 6: learned matching with each λ sampler; one row per sampler (`lambdas`: points of
    the λ grid of each barrier; default the profile's)."""
    rows = []
    for sampler in samplers:
        found = align(model_a, model_b, "learned_matching", data=data.train,
                      **align_options(profile, lambda_sampler=sampler))
        result = barrier(found.model_a, found.model_b, data.test, lambdas=lambdas or profile.experiment.lambdas)
        rows.append(result_row("learned_matching", models or [], result, lambda_sampler=sampler))
    return rows


# Chapter 08: the authors' recipe against ours. Each component is also added alone to our recipe
# (on the first pair), so a difference between the recipes can be traced to what causes it.
WM_COMPONENTS = {"layer weighting": ("weighting",), "Frobenius head cost": ("head_cost",),
                 "normalised L1 unit cost": ("unit_cost",)}
LM_COMPONENTS = {"authors' weight matching as start": ("weighting", "head_cost", "unit_cost"),
                 "AdamW 3e-4, warmup + cosine, clip": ("optimizer", "lr", "weight_decay", "schedule", "clip_norm"),
                 "dropout 0.1 in the objective": ("dropout",),
                 "best latents on validation": ("val_data",),
                 "noisy start": ("init_noise",)}


def recipe_comparison(kind: str, profile: Profile, device: torch.device, *, component_pairs: int = 1,
                      progress: bool = True) -> list[dict[str, Any]]:
    """Weight and learned matching under our recipe and the authors' (`align.RECIPES`) on every
    pair, with the controls (vanilla, canonical_unaligned); on the first `component_pairs` pairs
    also our recipe with one of the authors' components switched on (WM_COMPONENTS,
    LM_COMPONENTS). Both recipes run the profile's learned-matching length, and the authors' picks
    its latents on the validation split. Rows carry `recipe` ("ours", "official" or
    "ours + <component>"); the learned-matching rows also the validation checkpoint it kept."""
    from lmc_core.alignment import recipe_options

    data = study_data(kind, profile, device)
    official = {**recipe_options("official"), "val_data": data.val}  # each component's values, below
    lambdas = profile.experiment.lambdas
    rows: list[dict[str, Any]] = []
    for index, (sa, sb) in enumerate(seed_pairs(profile.experiment.n_pairs)):
        model_a, model_b = trained_models(kind, profile, [sa, sb], device, progress)
        for method in ("vanilla", "canonical_unaligned"):
            found = align_by_name(method, model_a, model_b, profile, data)
            pair = (model_a, model_b) if found is None else (found.model_a, found.model_b)
            rows.append(result_row(method, [sa, sb], barrier(*pair, data.test, lambdas=lambdas)))
        variants = {"ours": {}, "official": {"recipe": "official", "val_data": data.val}}
        for method, components in (("weight_matching", WM_COMPONENTS), ("learned_matching", LM_COMPONENTS)):
            runs = dict(variants)
            if index < component_pairs:
                runs |= {f"ours + {name}": {k: official[k] for k in keys} for name, keys in components.items()}
            for recipe, opts in runs.items():
                found = align_by_name(method, model_a, model_b, profile, data, **opts)
                result = barrier(found.model_a, found.model_b, data.test, lambdas=lambdas)
                extra = {"recipe": recipe}
                if "best_step" in found.history:
                    extra["best_step"] = found.history["best_step"][0]
                    extra["val_steps"] = len(found.history["val_step"])
                rows.append(result_row(method, [sa, sb], result, **extra))
    return rows


def multi_model(kind: str, profile: Profile, device: torch.device, progress: bool = True
                ) -> dict[str, Any]:
    """Fig. 4: loss over the simplex of M models for vanilla, universe weight matching and
    learned refinement. Returns {method: SimplexResult} plus the seeds."""
    seeds = list(range(profile.experiment.n_multi))
    models = trained_models(kind, profile, seeds, device, progress)
    data = study_data(kind, profile, device)
    res = profile.experiment.simplex_resolution
    out: dict[str, Any] = {"seeds": seeds, "vanilla": simplex_barrier(models, data.test, resolution=res)}
    opts = align_options(profile)
    for method in ("weight_matching", "learned_matching"):
        found = align_many(models, method, data=data.train if method == "learned_matching" else None, **opts)
        out[method] = simplex_barrier(found.models, data.test, resolution=res)
    return out


def with_overrides(profile: Profile, section: str, **changes: Any) -> Profile:
    """A copy of `profile` with fields of one section changed (e.g. a narrower GPT-2)."""
    return dataclasses.replace(profile, **{section: dataclasses.replace(getattr(profile, section), **changes)})


def lift_exact(narrow: nn.Module, wide: nn.Module, seed: int = 0) -> CanonicalTransformer:
    """`narrow` lifted into `wide`'s shape, RMSNorm eps and softmax scales (`lift_width` with
    `target=`), computing exactly `narrow`'s function."""
    from lmc_core.adapters import canonicalize
    from lmc_core.alignment import lift_width

    small, big = canonicalize(narrow), canonicalize(wide)
    return lift_width(small, target=big.config, seed=seed).apply(small)


def width_heterogeneous(profile: Profile, device: torch.device, *, kind: str = "gpt2", seed_wide: int = 0,
                        seed_narrow: int = 1, vary: str = "width", progress: bool = True
                        ) -> list[dict[str, Any]]:
    """Fig. 3c: a wide model against narrower ones. `vary="width"` narrows the residual stream
    only (the paper's setting); `vary="all"` narrows heads and MLP width in proportion as well
    (our extension through semi-permutations). Rows for vanilla-after-lift, WM and LM."""
    from lmc_core.adapters import canonicalize
    from lmc_core.engine import evaluate_ensemble

    if kind != "gpt2":
        raise ValueError("the width study trains GPT-2 models (kind='gpt2')")
    exp, base = profile.experiment, profile.gpt2
    wide = with_overrides(profile, "gpt2", n_embd=exp.hetero_wide)
    model_wide = trained_models(kind, wide, [seed_wide], device, progress)[0]
    data = study_data(kind, profile, device)
    rows = []
    for width in exp.hetero_narrow:
        ratio = width / exp.hetero_wide
        changes: dict[str, Any] = {"n_embd": width}
        if vary == "all":
            changes |= {"n_head": max(1, round(base.n_head * ratio)), "n_inner": max(1, round(base.n_inner * ratio))}
        elif vary != "width":
            raise ValueError(f"vary must be 'width' or 'all', got {vary!r}")
        heads = changes.get("n_head", base.n_head)
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        narrow = trained_models(kind, with_overrides(profile, "gpt2", **changes), [seed_narrow], device, progress)[0]
        # The narrow model on its own (not lifted), and how far the exact lift moves its logits.
        (own_loss,), (own_acc,) = evaluate_ensemble([narrow], data.test)
        wide_c, lifted = canonicalize(model_wide), lift_exact(narrow, model_wide)
        deviation = function_deviation(narrow, lifted, next(iter(data.test))[0])
        for method in ("lift_only", "weight_matching", "learned_matching"):
            opts = align_options(profile, lambda_sampler="uniform_0.2_0.5")
            if method == "lift_only":  # the exact lift, nothing matched
                pair = (wide_c, lifted)
            elif method == "weight_matching":
                found = align(wide_c, lifted, "weight_matching", **opts)
                pair = (found.model_a, found.model_b)
            else:
                found = align(wide_c, lifted, "learned_matching", data=data.train, **opts)
                pair = (found.model_a, found.model_b)
            result = barrier(*pair, data.test, lambdas=exp.lambdas)
            rows.append(result_row(method, [seed_wide, seed_narrow], result, width_a=exp.hetero_wide,
                                   width_b=width, heads_a=base.n_head, heads_b=heads, mlp_a=base.n_inner,
                                   mlp_b=changes.get("n_inner", base.n_inner), loss_b_unlifted=own_loss,
                                   acc_b_unlifted=own_acc, lift_logit_deviation=deviation))
    return rows


def eigen_angles(orthogonal: torch.Tensor) -> torch.Tensor:
    """Angles (radians, in [0, π]) of the eigenvalues e^{±iθ} of an orthogonal matrix (Fig. 5)."""
    eig = torch.linalg.eigvals(orthogonal.detach().double().cpu())
    return torch.atan2(eig.imag, eig.real).abs()


def permutation_change(first: Alignment, second: Alignment) -> dict[str, float]:
    """Fraction of heads and MLP units whose assignment differs between two alignments."""
    def changed(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a.argmax(-1) != b.argmax(-1)).double().mean())
    s1, s2 = first.symmetry, second.symmetry
    return {"heads": changed(s1.heads.read, s2.heads.read), "mlp": changed(s1.mlp.read, s2.mlp.read)}


def reassignment_sentence(at_lr: Mapping[str, float], at_perm_lr: Mapping[str, float], lr: float, perm_lr: float,
                          steps: int) -> str:
    """Chapter 07's verdict on the paper's §6 finding (permutations barely change under learned
    matching): what moved at each rate, and whether 0% at `lr` was forced by the step budget."""
    def pct(change: Mapping[str, float]) -> str:
        return f"{100 * change['heads']:.1f}% of heads and {100 * change['mlp']:.1f}% of MLP units"

    def forced(change: Mapping[str, float], rate: float) -> bool:  # 0% because nothing could move
        return steps < 1 / (2 * rate) and max(change.values()) == 0

    out = (f"At lm_lr = {lr:g} learned matching reassigned {pct(at_lr)}"
           + (f"; with {steps} steps, fewer than 1/(2·lr) = {1 / (2 * lr):.0f}, none could move, so this says "
              "nothing about the paper's finding." if forced(at_lr, lr) else "."))
    out += f" With the permutation latents at lm_perm_lr = {perm_lr:g}, it reassigned {pct(at_perm_lr)}: "
    if forced(at_perm_lr, perm_lr):
        return out + f"too few steps for any to move there either (fewer than {1 / (2 * perm_lr):.0f})."
    moved = max(at_perm_lr.values())
    return out + ("the permutations barely change even where they can (at most 10%), as the paper finds."
                  if moved <= 0.10 else "the permutations do move when they can, unlike the paper's finding.")


def soft_marginal_error(alignment: Alignment) -> float:
    """Largest |row or column sum − 1| of a soft alignment's head and MLP matrices."""
    from lmc_core.alignment.solvers import marginal_error

    return max(marginal_error(alignment.symmetry.heads.read), marginal_error(alignment.symmetry.mlp.read))


def weight_distance(model_a: CanonicalTransformer, model_b: CanonicalTransformer) -> float:
    """‖θ_A − θ_B‖ / ‖θ_A‖ over the canonical parameters."""
    return relative_distance(model_a.params(), model_b.params())


def function_deviation(model: nn.Module, transformed: CanonicalTransformer | nn.Module, inputs: torch.Tensor) -> float:
    """Largest |Δ logit| between two models on the same inputs (function preservation)."""
    from lmc_core.metrics import model_logits

    with torch.no_grad():
        return float((model_logits(model, inputs).double() - model_logits(transformed, inputs).double()).abs().max())


SYMMETRY_CLASSES = ("canonical_form", "permutation", "semi_permutation", "orthogonal", "width_lift", "invertible",
                    "composition")


def symmetry_classes(kind: str, profile: Profile, device: torch.device, seed: int = 0, generator_seed: int = 0,
                     lambdas: int | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Each symmetry class applied to one trained model (one row per class, `method` = the class):
    the largest |Δ logit| against the original on one test batch (the function is kept), the
    relative weight distance of the canonical parameters (the weights move) and the barrier of the
    straight path between the model and its transformed copy in canonical form (`loss_barrier`).

    Semi-permutations (2× heads and MLP units) and the width lift (2× residual width) change the
    shape; they are compared with the original written in that shape by the trivial embedding
    (originals in the first slots, the extra head/unit copies silenced with weight 0; O = [I 0]).
    The invertible class acts on the raw model: its row adds the raw-weight distance and the
    vanilla (raw-path) barrier; canonicalisation absorbs it. The composition is invertible (raw),
    then a permutation and an orthogonal map (canonical). `lambdas`: points of the λ grid of
    each path (default: the profile's)."""
    from lmc_core.adapters import canonicalize
    from lmc_core.metrics import model_logits
    from lmc_core.symmetry import Invertible, Orthogonal, Permutation, SemiPermutation

    model = trained_models(kind, profile, [seed], device, progress)[0]
    data = study_data(kind, profile, device)
    inputs = next(iter(data.test))[0]
    with torch.no_grad():
        logit_scale = float(model_logits(model, inputs).abs().max())
    canon = canonicalize(model)
    cfg = canon.config
    L, H, d, m = cfg.depth, cfg.num_heads, cfg.width, cfg.mlp_width
    gen = torch.Generator().manual_seed(generator_seed)
    lambdas = lambdas or profile.experiment.lambdas

    def distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
        return relative_distance({k: v.detach() for k, v in a.items()}, {k: b[k].detach() for k in a})

    def embedded(n: int, slots: int) -> tuple[torch.Tensor, torch.Tensor]:
        source = torch.cat([torch.arange(n), torch.arange(slots - n) % n]).expand(L, slots).clone()
        weight = torch.cat([torch.ones(n), torch.zeros(slots - n)]).double().expand(L, slots).clone()
        return source, weight

    rows: list[dict[str, Any]] = []

    def add(method: str, description: str, reference: CanonicalTransformer, transformed: nn.Module,
            canonical_transformed: CanonicalTransformer, **extra: Any) -> None:
        result = barrier(reference, canonical_transformed, data.test, lambdas=lambdas)
        rows.append(result_row(
            method, [seed], result, kind=kind, description=description,
            logit_deviation=function_deviation(model, transformed, inputs), logit_scale=logit_scale,
            weight_distance=distance(reference.params(), canonical_transformed.params()), **extra))

    add("canonical_form", "canonical rewrite (LayerNorm -> RMSNorm, heads as QK/OV circuits)", canon, canon, canon)
    perm = Permutation.random(cfg, gen).apply(canon)
    add("permutation", f"random permutation of the {H} heads and {m} MLP units of every layer", canon, perm, perm)
    semi = SemiPermutation.random(cfg, num_heads=2 * H, mlp_width=2 * m, generator=gen).apply(canon)
    reference = SemiPermutation(heads=embedded(H, 2 * H), mlp=embedded(m, 2 * m)).apply(canon)
    add("semi_permutation", f"random semi-permutation to {2 * H} heads and {2 * m} MLP units", reference, semi, semi)
    rot = Orthogonal.random(d, generator=gen).apply(canon)
    add("orthogonal", f"random orthogonal map of the residual stream ({d}×{d})", canon, rot, rot)
    lift = Orthogonal.random(d, 2 * d, generator=gen).apply(canon)
    reference = Orthogonal(torch.eye(d, 2 * d, dtype=torch.float64)).apply(canon)
    add("width_lift", f"random width lift of the residual stream ({d} -> {2 * d})", reference, lift, lift)
    raw_inv = Invertible.random(L, H, d // H, generator=gen).apply(model)
    vanilla = barrier(model, raw_inv, data.test, lambdas=lambdas)
    raw_a = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
    add("invertible", "random invertible maps inside every head (raw model: W_Q A, W_K A^-T, W_V B, B^-1 W_O)",
        canon, raw_inv, canonicalize(raw_inv), raw_weight_distance=distance(raw_a, raw_inv.state_dict()),
        vanilla_loss_barrier=vanilla.loss_barrier, vanilla_acc_barrier=vanilla.acc_barrier,
        vanilla_losses=vanilla.losses, vanilla_accuracies=vanilla.accuracies)
    combo = Permutation.random(cfg, gen).to_symmetry().then(Orthogonal.random(d, generator=gen).to_symmetry())
    composed = combo.apply(canonicalize(Invertible.random(L, H, d // H, generator=gen).apply(model)))
    add("composition", "invertible (raw), then permutation, then orthogonal", canon, composed, composed)
    return rows
