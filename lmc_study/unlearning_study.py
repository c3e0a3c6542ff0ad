"""Chapter 10: two forgetting settings, every method on every seed, and its barrier to retraining.

Settings (``profile.unlearn``):

- ``random``: a ViT trained without augmentation on ``random_images`` training images for
  ``random_epochs`` epochs (last epoch kept) memorises them; ``forget_size`` random ones of them
  are erased (a new forget set per seed);
- ``class``: a ViT trained with the profile's recipe on ``class_images`` training images; every
  image of class ``forget_class`` is erased. Its test images are measured apart; the test
  accuracy, the attacks' non-members and the barriers use the other classes' test images.

Per setting and seed: the original (model seed s), the retrained model (s + RETRAIN_SEED), a
second retrained model (s + OTHER_SEED, the reference) and every approximate method. The
baselines' rate and length are chosen on seed 0 without test data (``tune_baselines``). The
summaries and verdicts below are generated from the rows ``study`` returns.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from lmc_core.cache import CheckpointCache
from lmc_core.interpolation import barrier

from . import experiments
from .data import ImageDataset, image_batches
from .data.splits import image_splits
from .models import build_model
from .profiles import Profile
from .stats import holm, mean_se, paired_interval, relation
from .train import model_spec
from .unlearning import (
    BASELINES,
    LABELS,
    METHODS,
    MODELS,
    OTHER_SEED,
    RETRAIN_SEED,
    UNLEARN_VERSION,
    ForgetSplit,
    build_args,
    embed,
    fit,
    forget_class,
    forget_set,
    take,
    unlearn,
)
from .unlearning_metrics import (
    EvalSets,
    LatentAttack,
    calibration_split,
    per_sample,
    unlearning_metrics,
)

SETTINGS = {"random": "random samples, memorised", "class": "one whole class"}
ALIGNMENTS = ("vanilla", "weight_matching", "learned_matching")
SEPARATION_POINTS = 0.05  # the setting separates: original's forget accuracy ≥ 5 points above retraining's,
SEPARATION_AUC = 0.60  # or the loss attack's AUC on the original's forget set ≥ 0.60 (issue 28)
EQUIVALENCE_NATS = 0.05  # a barrier difference whose whole 95% interval lies within ± this reads "no difference"
ATTACK_SEED = 0


# -- the settings -----------------------------------------------------------------------------------

def setting_profile(profile: Profile, setting: str) -> Profile:
    """The recipe a setting's models are trained with: random forgetting trains longer, without
    augmentation, so that the original memorises its training images."""
    if setting not in SETTINGS:
        raise ValueError(f"unknown unlearning setting {setting!r}; valid: {', '.join(SETTINGS)}")
    if setting == "class":
        return profile
    u = profile.unlearn
    return dataclasses.replace(profile, vit=dataclasses.replace(profile.vit, epochs=u.random_epochs, augment=False))


def setting_train(profile: Profile, setting: str) -> ImageDataset:
    """The training images of a setting's original: a stratified seeded subset of the train split
    (the validation images held out; the profile's own ``vit.train_subset`` does not apply)."""
    u = profile.unlearn
    whole = dataclasses.replace(profile, vit=dataclasses.replace(profile.vit, train_subset=None))
    train = image_splits(whole, with_test=False).train
    return train.subset(u.random_images if setting == "random" else u.class_images, seed=0)


def setting_split(train: ImageDataset, profile: Profile, setting: str, seed: int) -> ForgetSplit:
    u = profile.unlearn
    if setting == "random":
        return forget_set(train, u.forget_size, seed)
    return forget_class(train, u.forget_class, seed)


def _digest(data: ImageDataset) -> str:
    return hashlib.sha256(data.source_index.numpy().astype("<i8").tobytes()).hexdigest()


def unlearn_spec(method: str, setting: str, split: ForgetSplit, profile: Profile, seed: int,
                 hparams: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What decides a model's weights: the setting's recipe and the model seed, the forget split
    (or, for the original, the whole training set) and the method's own settings."""
    u = profile.unlearn
    spec: dict[str, Any] = {"kind": "vit-unlearn", "setting": setting, "method": method,
                            "model": model_spec("vit", setting_profile(profile, setting), seed),
                            "forget": split.fingerprint(), "version": UNLEARN_VERSION}
    if method in BASELINES:
        spec["unlearn"] = {"batch_size": u.batch_size, **(hparams or {})}
    elif method.startswith("manif"):
        spec["unlearn"] = {k: getattr(u, k) for k in ("k", "lr", "batch_size", "loss_scale", "surrogate_t", "ce_label")}
    return spec


def _cached(spec: Mapping[str, Any], make: Callable[[], nn.Module], like: ImageDataset, profile: Profile,
            device: torch.device, cache: CheckpointCache) -> nn.Module:
    if (hit := cache.load(spec)) is not None:
        state, meta = hit
        out = build_model("vit", profile, **build_args(like))
        out.load_state_dict(state)
        out.lmc_meta = {**meta, "from_cache": True}
        return out.to(device).eval()
    out = make()
    cache.save(spec, out, out.lmc_meta)
    out.lmc_meta["from_cache"] = False
    return out


def original_model(train: ImageDataset, profile: Profile, setting: str, seed: int, device: torch.device, cache: CheckpointCache, progress: bool = False) -> nn.Module:
    """The model before unlearning: trained on the whole of ``train`` (forget set included)."""
    sp = setting_profile(profile, setting)
    spec = {"kind": "vit-unlearn-original", "setting": setting, "model": model_spec("vit", sp, seed),
            "train": _digest(train), "version": UNLEARN_VERSION}

    def make() -> nn.Module:
        start = time.perf_counter()
        model = fit(sp, train, seed, device, progress, keep="last")
        model.lmc_meta = {"method": "original", "seed": seed, "wall_s": time.perf_counter() - start}
        return model

    return _cached(spec, make, train, profile, device, cache)


def unlearned_model(original: nn.Module | None, method: str, split: ForgetSplit, profile: Profile, setting: str,
                    seed: int, device: torch.device, cache: CheckpointCache, hparams: Mapping[str, Any] | None = None,
                    progress: bool = False) -> nn.Module:
    """``unlearn`` through the checkpoint cache (``retrain`` ignores ``original`` and trains model
    seed ``seed``)."""
    sp = setting_profile(profile, setting)
    spec = unlearn_spec(method, setting, split, profile, seed, hparams)
    return _cached(spec, lambda: unlearn(original, method, split.forget, split.retain, sp, seed=seed, device=device,
                                         progress=progress, **(hparams or {})),
                   split.retain, profile, device, cache)


def _accuracy(model: nn.Module, data: ImageDataset, profile: Profile, device: torch.device) -> float:
    return float(per_sample(model, data, profile.eval.batch_size, device)[1].mean())


def tune_baselines(original: nn.Module, split: ForgetSplit, retain_eval: ImageDataset, profile: Profile, setting: str,
                   device: torch.device, cache: CheckpointCache) -> dict[str, Any]:
    """Each baseline's (lr, length) from the profile's grid, on seed 0's split and without test
    data: among the candidates that keep the retained accuracy within ``retain_margin`` of the
    original's, the one whose forget accuracy is nearest its target (random forgetting: the
    original's accuracy on the validation images, what a model that never saw the erased images
    scores; class forgetting: 0). When none keeps it, the one with the best retained accuracy."""
    u = profile.unlearn
    val = image_splits(profile, with_test=False).val
    if setting == "random":
        target, target_from = _accuracy(original, val, profile, device), "original's validation accuracy"
    else:
        target, target_from = 0.0, "0 (the erased class)"
    floor = _accuracy(original, retain_eval, profile, device) - u.retain_margin
    record: dict[str, Any] = {"setting": setting, "target": target, "target_from": target_from,
                              "retain_floor": floor, "retain_margin": u.retain_margin, "methods": {}}
    for method in BASELINES:
        lengths = u.tune_finetune_steps if method == "finetune" else u.tune_epochs
        candidates = []
        for lr in u.tune_lrs:
            for length in lengths:
                hp = {"lr": lr, "length": length}
                model = unlearned_model(original, method, split, profile, setting, split.seed, device, cache, hp)
                forget_acc, retain_acc = _accuracy(model, split.forget, profile, device), \
                    _accuracy(model, retain_eval, profile, device)
                candidates.append({**hp, "forget_acc": forget_acc, "retain_acc": retain_acc,
                                   "eligible": retain_acc >= floor, "distance": abs(forget_acc - target),
                                   "wall_s": model.lmc_meta.get("wall_s")})
        eligible = [c for c in candidates if c["eligible"]]
        best = (min(eligible, key=lambda c: (c["distance"], -c["retain_acc"])) if eligible
                else max(candidates, key=lambda c: c["retain_acc"]))
        record["methods"][method] = {"chosen": {"lr": best["lr"], "length": best["length"]},
                                     "any_eligible": bool(eligible), "candidates": candidates,
                                     "length_unit": "steps" if method == "finetune" else "epochs"}
    return record


# -- the study ----------------------------------------------------------------------------------------

def _barrier_set(test: ImageDataset, profile: Profile, erased_class: int | None) -> ImageDataset:
    keep = torch.ones(len(test), dtype=torch.bool) if erased_class is None else test.labels != erased_class
    rows = keep.nonzero().squeeze(1)
    pick = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))[: profile.unlearn.barrier_images]
    return test.rows(rows[pick.sort().values])


def study(profile: Profile, device: torch.device, *, progress: bool = False,
          cache: CheckpointCache | None = None) -> dict[str, Any]:
    """Every setting × seed × model of MODELS: a metrics row each, a barrier row per (model,
    alignment) between the retrained model and that model, and the tuning record."""
    u = profile.unlearn
    cache = cache or CheckpointCache()
    test = experiments.study_data("vit", profile, device).test.dataset
    metric_rows: list[dict[str, Any]] = []
    barrier_rows: list[dict[str, Any]] = []
    tuning: dict[str, Any] = {}
    for setting in u.settings:
        train = setting_train(profile, setting)
        erased_class = u.forget_class if setting == "class" else None
        barrier_data = image_batches(_barrier_set(test, profile, erased_class), profile.eval.batch_size, device=device)
        for seed in sorted(u.seeds):
            split = setting_split(train, profile, setting, seed)
            pick = torch.randperm(len(split.retain), generator=torch.Generator().manual_seed(seed))
            retain_eval = take(split.retain, pick[: u.eval_retain].sort().values)
            original = original_model(train, profile, setting, seed, device, cache, progress)
            if setting not in tuning:  # the first seed tunes the baselines for every seed
                tuning[setting] = tune_baselines(original, split, retain_eval, profile, setting, device, cache)
            models = {"original": original}
            for method in METHODS:
                hp = tuning[setting]["methods"][method]["chosen"] if method in BASELINES else None
                models[method] = unlearned_model(original, method, split, profile, setting,
                                                 seed + RETRAIN_SEED if method == "retrain" else seed, device, cache,
                                                 hp, progress)
            models["retrain_other"] = unlearned_model(None, "retrain", split, profile, setting, seed + OTHER_SEED,
                                                      device, cache, progress=progress)
            sets = EvalSets.build(split.forget, retain_eval, test, erased_class)
            fit_r, fit_t = calibration_split(len(sets.retain))[0], calibration_split(len(sets.test))[0]
            z_members = embed(original, sets.retain, profile.eval.batch_size, device)[fit_r]
            z_others = embed(original, sets.test, profile.eval.batch_size, device)[fit_t]
            their_attack = LatentAttack.fit(z_members, z_others, epochs=u.attack_epochs, seed=ATTACK_SEED)
            for name, model in models.items():
                row = unlearning_metrics(model, sets, original_attack=their_attack, attack_epochs=u.attack_epochs,
                                         batch_size=profile.eval.batch_size, device=device)
                meta = model.lmc_meta
                extra = {k: meta[k] for k in ("hinge_open", "margin_mean", "lr", "length") if k in meta}
                metric_rows.append({"kind": "metrics", "setting": setting, "method": name, "seed": seed,
                                    "wall_s": meta.get("wall_s"), **row, **extra})
            align_data = experiments.StudyData(
                "vit", image_batches(split.retain, profile.align.lm_batch_size, device=device, shuffle=True, seed=seed),
                barrier_data, f"retained set of seed {seed}")
            target = models["retrain"]
            for name in (m for m in MODELS if m != "retrain"):
                for alignment in ALIGNMENTS:
                    found = experiments.align_by_name(alignment, target, models[name], profile, align_data)
                    pair = (target, models[name]) if found is None else (found.model_a, found.model_b)
                    result = barrier(*pair, barrier_data, lambdas=u.lambdas)
                    barrier_rows.append(experiments.result_row(name, ["retrain", name], result, kind="barrier",
                                                               setting=setting, alignment=alignment, seed=seed))
    return {"metrics": metric_rows, "barriers": barrier_rows, "tuning": tuning}


# -- summaries and verdicts ---------------------------------------------------------------------------

PERCENT = ("forget_acc", "retain_acc", "test_acc", "forget_test_acc", "mia_forget_rate", "mia_test_rate",
           "mia_heldout_acc")


def _select(rows: Sequence[Mapping[str, Any]], **where: Any) -> list[Mapping[str, Any]]:
    return [r for r in rows if all(r.get(k) == v for k, v in where.items())]


def _by_seed(rows: Sequence[Mapping[str, Any]], method: str, metric: str, **where: Any) -> dict[int, float]:
    return {r["seed"]: float(r[metric]) for r in _select(rows, method=method, **where) if r.get(metric) is not None}


def paired(rows: Sequence[Mapping[str, Any]], metric: str, method: str, reference: str, **where: Any
           ) -> dict[str, Any]:
    """``metric`` of ``method`` minus that of ``reference``, seed by seed over the seeds both have
    (rows filtered by ``where``): ``paired_interval`` of the differences."""
    a, b = _by_seed(rows, method, metric, **where), _by_seed(rows, reference, metric, **where)
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError(f"no seed has {metric} for both {method!r} and {reference!r}")
    return {"method": method, "reference": reference, "metric": metric, "seeds": seeds,
            **paired_interval([a[s] - b[s] for s in seeds]), **where}


def _scale(metric: str) -> tuple[float, int]:
    if metric == "wall_s":
        return 1.0, 1
    return (100.0, 1) if metric in PERCENT else (1.0, 3)


def _format(metric: str, mean: float, se: float | None, sign: str = "") -> str:
    """Accuracies and rates in percent (the book's convention), everything else to 3 decimals."""
    scale, digits = _scale(metric)
    return f"{scale * mean:{sign}.{digits}f}" + ("" if se is None else f" ± {scale * se:.{digits}f}")


def summary(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str], **where: Any) -> list[dict[str, Any]]:
    """Per model of MODELS: mean ± s.e. over seeds of each metric (rows filtered by ``where``);
    keys ``m`` (text), ``m_mean``, ``m_se``."""
    out = []
    for method in MODELS:
        chosen = _select(rows, method=method, **where)
        if not chosen:
            continue
        row: dict[str, Any] = {"method": method, "label": LABELS[method], "n": len(chosen)}
        for m in metrics:
            values = [float(r[m]) for r in chosen if r.get(m) is not None]
            mean, se = mean_se(values) if values else (None, None)
            row[f"{m}_mean"], row[f"{m}_se"] = mean, se
            row[m] = "—" if mean is None else _format(m, mean, se)
        out.append(row)
    return out


def positive_control(metric_rows: Sequence[Mapping[str, Any]], setting: str) -> dict[str, Any]:
    """Does the setting separate the original from retraining? The original's forget accuracy
    minus the retrained model's (paired over seeds) and the loss attack's AUC on the original's
    forget set; ``separates`` names the criterion met (None: neither)."""
    gap = paired(metric_rows, "forget_acc", "original", "retrain", setting=setting)
    aucs = list(_by_seed(metric_rows, "original", "mia_auc", setting=setting).values())
    heldout = list(_by_seed(metric_rows, "original", "mia_heldout_auc", setting=setting).values())
    latent = list(_by_seed(metric_rows, "original", "latent_auc", setting=setting).values())
    latent_heldout = list(_by_seed(metric_rows, "original", "latent_own_heldout_auc", setting=setting).values())
    criteria, met = [], []
    if gap["mean_diff"] >= SEPARATION_POINTS and gap["n_lower"] == 0:
        criteria.append(f"forget accuracy {100 * gap['mean_diff']:.1f} points above retraining's "
                        f"(≥ {100 * SEPARATION_POINTS:.0f}; above on every seed)")
        met.append(f"forget gap ≥ {100 * SEPARATION_POINTS:.0f} points")
    if mean_se(aucs)[0] >= SEPARATION_AUC:
        criteria.append(f"loss-attack AUC {mean_se(aucs)[0]:.3f} ≥ {SEPARATION_AUC}")
        met.append(f"AUC ≥ {SEPARATION_AUC}")
    return {"setting": setting, "label": SETTINGS[setting], "gap": gap,
            "original_forget_acc": _format("forget_acc", *mean_se(list(_by_seed(
                metric_rows, "original", "forget_acc", setting=setting).values()))),
            "retrain_forget_acc": _format("forget_acc", *mean_se(list(_by_seed(
                metric_rows, "retrain", "forget_acc", setting=setting).values()))),
            "gap_text": interval_text(gap), "auc": _format("mia_auc", *mean_se(aucs)),
            "heldout_auc": _format("mia_heldout_auc", *mean_se(heldout)),
            "latent_auc": _format("latent_auc", *mean_se(latent)),
            "latent_heldout_auc": _format("latent_auc", *mean_se(latent_heldout)),
            "latent_sees_membership": _sees(metric_rows, setting, "latent_own_heldout_auc"),
            "loss_sees_membership": _sees(metric_rows, setting, "mia_heldout_auc"),
            "separates": "; ".join(criteria) or None,
            "verdict": ("yes: " + ", ".join(met)) if met else "no: no ranking drawn"}


def _sees(metric_rows: Sequence[Mapping[str, Any]], setting: str, metric: str) -> bool:
    """Whether an attack tells the original's held-out members from non-members: its AUC's 95%
    interval lies above 0.5 on every seed."""
    rows = _select(metric_rows, method="original", setting=setting)
    return bool(rows) and all(r[f"{metric}_lo"] > 0.5 for r in rows)


def interval_text(d: Mapping[str, Any]) -> str:
    scale, digits = _scale(d["metric"])
    text = f"{scale * d['mean_diff']:+.{digits}f}"
    if d["lo"] is not None:
        text += f" [{scale * d['lo']:+.{digits}f}, {scale * d['hi']:+.{digits}f}]"
    return text


def damaged(metric_rows: Sequence[Mapping[str, Any]], setting: str) -> tuple[float, dict[str, dict[str, Any]]]:
    """The retrained models' spread (largest per-seed |test accuracy of retrain − of retrain,
    other seed|) and the methods whose mean test accuracy is below the retrained model's by more."""
    spread = max(abs(d) for d in paired(metric_rows, "test_acc", "retrain_other", "retrain", setting=setting)["values"])
    out = {}
    for m in MODELS:
        if m in ("original", "retrain", "retrain_other"):
            continue
        d = paired(metric_rows, "test_acc", m, "retrain", setting=setting)
        if -d["mean_diff"] > spread:
            out[m] = d
    return spread, out


def barrier_comparisons(barrier_rows: Sequence[Mapping[str, Any]], setting: str) -> list[dict[str, Any]]:
    """Every model's barrier to the retrained model minus the reference's (two retrained models),
    paired over seeds, per alignment; Holm across the models of one alignment."""
    out = []
    for alignment in ALIGNMENTS:
        family = [paired(barrier_rows, "loss_barrier", m, "retrain_other", setting=setting, alignment=alignment)
                  for m in MODELS if m not in ("retrain", "retrain_other")]
        for d, p in zip(family, holm([d["p"] for d in family]), strict=True):
            d["p_holm"] = p
            d["verdict"] = relation(d, EQUIVALENCE_NATS)
        out += family
    return out


def metric_comparisons(metric_rows: Sequence[Mapping[str, Any]], setting: str, metric: str,
                       margin: float) -> list[dict[str, Any]]:
    """Every approximate method's ``metric`` minus the retrained model's, paired over seeds; Holm
    across the methods."""
    family = [paired(metric_rows, metric, m, "retrain", setting=setting)
              for m in MODELS if m not in ("retrain", "retrain_other")]
    for d, p in zip(family, holm([d["p"] for d in family]), strict=True):
        d["p_holm"] = p
        d["verdict"] = relation(d, margin)
    return family


def comparison_table(comparisons: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows for display: what, model, mean difference [95% t interval], median, per seed, Holm p, verdict."""
    out = []
    for d in comparisons:
        scale, digits = _scale(d["metric"])
        out.append({"what": d.get("alignment", d["metric"]).replace("_", " "), "label": LABELS[d["method"]],
                    "diff": interval_text(d), "median": f"{scale * d['median']:+.{digits}f}",
                    "per_seed": ", ".join(f"{scale * v:+.{digits}f}" for v in d["values"]),
                    "p_holm": "—" if d.get("p_holm") is None else f"{d['p_holm']:.3f}", "verdict": d["verdict"]})
    return out


def barrier_table(barrier_rows: Sequence[Mapping[str, Any]], setting: str) -> list[dict[str, Any]]:
    """One row per model: the loss barrier to the retrained model after each alignment (mean ±
    s.e. over seeds) and the model's own loss on the barrier images."""
    table = []
    for method in (m for m in MODELS if m != "retrain"):
        rows = _select(barrier_rows, method=method, setting=setting)
        if not rows:
            continue
        row: dict[str, Any] = {"method": method, "label": LABELS[method], "n": len({r["seed"] for r in rows})}
        for alignment in ALIGNMENTS:
            row[alignment] = summary(rows, ["loss_barrier"], alignment=alignment)[0]["loss_barrier"]
        row["test_loss"] = summary(rows, ["loss_b"], alignment="vanilla")[0]["loss_b"]
        table.append(row)
    return table


def verdicts(metric_rows: Sequence[Mapping[str, Any]], barrier_rows: Sequence[Mapping[str, Any]],
             setting: str) -> list[str]:
    """The setting's findings in sentences, generated from its rows: whether it separates the
    original from retraining (and nothing more when it does not), which methods damaged the
    model, where each method's barrier stands against the reference, and the attacks."""
    control = positive_control(metric_rows, setting)
    n = control["gap"]["n"]
    if control["separates"] is None:
        return [f"**No positive control.** The original's forget accuracy is {control['original_forget_acc']}% "
                f"against retraining's {control['retrain_forget_acc']}% and the loss attack's AUC is "
                f"{control['auc']}: this setting does not separate the original from retraining, so no "
                "method is ranked on it."]
    out = [f"**The setting separates the original from retraining** ({control['separates']}; {n} seeds)."]
    spread, hurt = damaged(metric_rows, setting)
    if hurt:
        out.append(f"**Damaged** (test accuracy below the retrained model's by more than the retrained models' "
                   f"spread, {100 * spread:.1f} points): " + "; ".join(
                       f"{LABELS[m]} ({interval_text(d)} points)" for m, d in hurt.items())
                   + ". Read their barriers with that in mind: a barrier is measured against its ends, so a "
                   "model that lost accuracy can show a low barrier without having reached the retrained basin.")
    else:
        out.append(f"No method lowered test accuracy below the retrained model's by more than the retrained "
                   f"models' spread ({100 * spread:.1f} points).")
    for alignment in ALIGNMENTS:
        ref = mean_se(list(_by_seed(barrier_rows, "retrain_other", "loss_barrier", setting=setting,
                                    alignment=alignment).values()))[0]
        family = [d for d in barrier_comparisons(barrier_rows, setting) if d["alignment"] == alignment]
        groups: dict[str, list[str]] = {}
        for d in family:
            groups.setdefault(d["verdict"], []).append(LABELS[d["method"]] + (" (damaged)" if d["method"] in hurt else ""))
        parts = [f"{verdict}: {', '.join(names)}" for verdict, names in groups.items()]
        out.append(f"**{alignment.replace('_', ' ')}** (reference: two retrained models, {ref:.3f} nats; "
                   f"equivalence margin ±{EQUIVALENCE_NATS}): barrier to the retrained model vs the reference — "
                   + "; ".join(parts) + ".")
    attacks = {"loss": control["loss_sees_membership"], "latent": control["latent_sees_membership"]}
    blind = [name for name, sees in attacks.items() if not sees]
    if blind:
        out.append("Attack positive control: on the original's held-out members vs non-members, the "
                   + " and the ".join({"loss": "loss-threshold attack", "latent": "authors' latent attack"}[b]
                                      for b in blind)
                   + (" is" if len(blind) == 1 else " are") + " not above chance on every seed (AUC interval "
                   "reaching 0.5): " + ("its" if len(blind) == 1 else "their") + " AUCs on the forget set rank "
                   "nothing here.")
    if attacks["loss"]:
        close = [LABELS[d["method"]] for d in metric_comparisons(metric_rows, setting, "mia_auc", 0.05)
                 if d["verdict"] == "no difference"]
        out.append("Loss-attack AUC on the forget set within ±0.05 of the retrained model's (95% interval): "
                   + (", ".join(close) if close else "no method") + ".")
    return out + [manif_sentence(metric_rows, setting)]


def manif_sentence(metric_rows: Sequence[Mapping[str, Any]], setting: str) -> str:
    """What ManiF-SMC's two choices did in a setting: how often the hinge was open (while it is,
    the margin, and so the surrogate that sets it, leaves the gradient alone), the trained
    surrogate against the untrained one, and the erased label against the positive's own."""
    manif = [r for r in _select(metric_rows, setting=setting) if r.get("hinge_open") is not None]
    hinge = mean_se([float(r["hinge_open"]) for r in manif])[0]
    gap = max(abs(d) for m in ("forget_acc", "test_acc", "mia_auc")
              for d in paired(metric_rows, m, "manif_smc_trained", "manif_smc", setting=setting)["values"])
    surrogate = ("gave the same metrics on every seed" if gap < 1e-9
                 else f"differ by at most {gap:.4f} in any metric on any seed")
    label = {m: paired(metric_rows, m, "manif_smc", "manif_smc_positive_label", setting=setting)
             for m in ("forget_acc", "test_acc")}
    return (f"ManiF-SMC's hinge was open on {100 * hinge:.0f}% of its steps; while it is open the margin is a "
            f"constant of the loss, so the trained and the untrained surrogate {surrogate}. Scoring the positive "
            f"with the erased sample's label (theirs) rather than its own changed forget accuracy by "
            f"{interval_text(label['forget_acc'])} points and test accuracy by {interval_text(label['test_acc'])} "
            "points (95% intervals)." + (" When a whole class is erased, every positive belongs to another class, so "
                                         "that term trains the model to give retained images the erased label."
                                         if setting == "class" else ""))


ABLATIONS = (("manif_smc_positive_label", "manif_smc"), ("manif_smc_trained", "manif_smc"))


def ablation_table(metric_rows: Sequence[Mapping[str, Any]], barrier_rows: Sequence[Mapping[str, Any]],
                   setting: str) -> list[dict[str, Any]]:
    """Each ManiF-SMC variant minus ManiF-SMC as released, paired over seeds: forget and test
    accuracy, loss-attack AUC, and the barrier to the retrained model (vanilla, learned matching)."""
    rows = []
    for variant, base in ABLATIONS:
        diffs = [paired(metric_rows, m, variant, base, setting=setting) for m in ("forget_acc", "test_acc", "mia_auc")]
        diffs += [{**paired(barrier_rows, "loss_barrier", variant, base, setting=setting, alignment=a),
                   "what": f"barrier, {a.replace('_', ' ')}"} for a in ("vanilla", "learned_matching")]
        rows += [{"setting": setting, "label": LABELS[variant], "what": d.get("what", d["metric"].replace("_", " ")),
                  "diff": interval_text(d)} for d in diffs]
    return rows


def tuning_table(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per tried (baseline, lr, length) of a setting's tuning record, the chosen one marked."""
    rows = []
    for method, entry in record["methods"].items():
        for c in entry["candidates"]:
            chosen = (c["lr"], c["length"]) == (entry["chosen"]["lr"], entry["chosen"]["length"])
            rows.append({"setting": record["setting"], "label": LABELS[method], "lr": f"{c['lr']:g}",
                         "length": f"{c['length']} {entry['length_unit']}", "forget": f"{100 * c['forget_acc']:.1f}",
                         "retain": f"{100 * c['retain_acc']:.1f}", "eligible": "yes" if c["eligible"] else "no",
                         "chosen": "**chosen**" if chosen else ""})
    return rows


def auc_table(metric_rows: Sequence[Mapping[str, Any]], setting: str) -> list[dict[str, Any]]:
    """Per model: every seed's forget-set AUC with its 95% interval, for the loss attack and the
    authors' latent attack."""
    out = []
    for method in MODELS:
        rows = sorted(_select(metric_rows, method=method, setting=setting), key=lambda r: r["seed"])
        if rows:
            out.append({"label": LABELS[method], **{
                m: "; ".join(f"{r[m]:.3f} [{r[m + '_lo']:.2f}, {r[m + '_hi']:.2f}]" for r in rows)
                for m in ("mia_auc", "latent_auc", "latent_own_auc")}})
    return out
