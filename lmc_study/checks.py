"""Generated checks of each paper figure and table against a chapter's own numbers.

Every function takes what a chapter computed (results.json rows or the objects behind them) and
returns a sentence: what the paper reports for the figure, what this run shows, and whether the
two agree. Nothing here knows the outcome in advance; a chapter's prose only points to these
sentences. "About zero" is `paper.ZERO_BARRIER` throughout.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .paper import PROFILE_HARDWARE, SHORT, TABLE3, ZERO_BARRIER
from .stats import mean_se
from .table2 import barriers_by_pair, paired_by_setting

ZERO = f"about zero (≤ {ZERO_BARRIER:g} nats)"
SMALL_ROTATION_DEG = 10.0  # median eigen-angle below which a rotation counts as a nudge
NEGLIGIBLE = 0.005  # nats: a change of the barrier below this is not worth naming (tune.py's tolerance)


# -- Table 3: the recipes -------------------------------------------------------------------------

def _sci(x: float) -> str:
    """3e-4, not 0.0003: the paper's notation."""
    mantissa, exponent = f"{x:.3e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}" if x < 0.01 else f"{x:g}"


def recipe_settings(kind: str, profile: Any) -> dict[str, str]:
    """A profile's recipe in the rows of TABLE3."""
    hardware = PROFILE_HARDWARE.get(profile.name, profile.device)
    if kind == "vit":
        v = profile.vit
        return {
            "data": v.dataset, "layers / heads / width / MLP": f"{v.depth} / {v.num_heads} / {v.embed_dim} / {v.mlp_dim}",
            "patch or context": f"patch {v.patch_size}×{v.patch_size}",
            "training data": (f"{v.train_subset:,} images (+ {v.val_images:,} held out for validation)"
                              if v.train_subset else f"all but {v.val_images:,} held out for validation"),
            "epochs": str(v.epochs), "batch": str(v.batch_size), "optimiser": "AdamW",
            "learning rate": _sci(v.lr), "weight decay": _sci(v.weight_decay),
            "schedule": f"{v.schedule}, warmup {v.warmup_epochs:g} epochs",
            "regularisation": f"crop (pad {v.pad}), flip" if v.augment else "none",
            "hardware": hardware,
        }
    g = profile.gpt2
    return {
        "data": f"{g.corpus}, {'GPT-2 BPE' if g.tokenizer == 'gpt2' else g.tokenizer}",
        "layers / heads / width / MLP": f"{g.n_layer} / {g.n_head} / {g.n_embd} / {g.n_inner}",
        "patch or context": f"context {g.block_size}",
        "training data": f"{g.train_blocks:,} blocks" if g.train_blocks else "all",
        "epochs": f"≤ {g.max_epochs}, early stopping (patience {g.patience})",
        "batch": str(g.batch_size), "optimiser": "AdamW", "learning rate": _sci(g.lr),
        "weight decay": _sci(g.weight_decay), "schedule": f"warmup {g.warmup_steps} steps, cosine",
        "regularisation": f"dropout {g.dropout:g}" if g.dropout else "none", "hardware": hardware,
    }


def table3_rows(kind: str, profiles: Iterable[Any]) -> list[dict[str, str]]:
    """The paper's Table 3 recipe of `kind` ("vit" or "gpt2") next to each profile's, one row a
    setting (the `paper` profile is Table 3 itself and is left out)."""
    ours = {p.name: recipe_settings(kind, p) for p in profiles if p.name != "paper"}
    return [{"setting": key, "paper (Table 3)": value, **{name: s[key] for name, s in ours.items()}}
            for key, value in TABLE3[kind].items()]


def measurement_rows(profiles: Iterable[Any]) -> list[dict[str, str]]:
    """What each profile measures (test set, alignment budgets, how many models), one row a
    setting and one column a profile."""
    def settings(p: Any) -> dict[str, str]:
        e, a, x = p.eval, p.align, p.experiment
        return {
            "test set": f"{e.test_images or 'all'} images, {e.test_blocks or 'all'} blocks",
            "weight matching": f"{a.wm_iterations} iterations",
            "learned matching": f"{a.lm_epochs} epoch(s)"
                                + (f" × {a.lm_steps_per_epoch} steps" if a.lm_steps_per_epoch else "")
                                + f", λ ~ {a.lambda_sampler}, LM-perm rate {a.lm_perm_lr:g}",
            "pairs / models in the simplex": f"{x.n_pairs} / {x.n_multi}",
            "widths (Fig. 3c)": f"{x.hetero_wide} vs " + ", ".join(map(str, x.hetero_narrow)),
            "λ grid": f"{x.lambdas} points",
        }
    cols = {p.name: settings(p) for p in profiles}
    first = next(iter(cols.values()))
    return [{"setting": key, **{name: s[key] for name, s in cols.items()}} for key in first]


def _pm(mean: float, se: float | None, digits: int = 3) -> str:
    return f"{mean:.{digits}f}" + (f" ± {se:.{digits}f}" if se is not None else "")


def _pairs(n: int) -> str:
    return f"{n} pair{'s' if n != 1 else ''}"


def _peak_lambda(row: Mapping[str, Any]) -> float:
    """λ of the largest excess loss along a path row (λ = 1 is model A)."""
    lambdas, losses = row["lambdas"], row["losses"]
    ends = {lam: loss for lam, loss in zip(lambdas, losses, strict=True) if lam in (0.0, 1.0)}
    excess = [loss - (lam * ends[1.0] + (1 - lam) * ends[0.0]) for lam, loss in zip(lambdas, losses, strict=True)]
    return float(lambdas[int(np.argmax(excess))])


def path_sentence(rows: Sequence[Mapping[str, Any]], figure: str) -> str:
    """Figs. 3a / 3b. The paper: the straight path between raw models rises far above its ends;
    weight matching removes most of the rise and learned matching flattens it. Checked per pair:
    the fraction of vanilla's barrier weight matching removes (most: over half) and learned
    matching's barrier against ZERO_BARRIER."""
    by_pair = barriers_by_pair(rows, "loss_barrier")
    pairs = [v for v in by_pair.values() if {"vanilla", "weight_matching", "learned_matching"} <= v.keys()]
    if not pairs:
        return f"{figure}: vanilla, weight matching and learned matching did not all run; no check."
    fractions = [1 - v["weight_matching"] / v["vanilla"] for v in pairs]
    removed = mean_se(fractions)
    lm = mean_se([v["learned_matching"] for v in pairs])
    checked = {key for key, v in by_pair.items() if v in pairs}
    peaks = [_peak_lambda(r) for r in rows if r.get("method") == "vanilla" and "lambdas" in r
             and tuple(r["models"]) in checked]
    # the paper's reading must hold on every pair, not only in the mean
    most = all(f > 0.5 for f in fractions)
    flat = all(v["learned_matching"] <= ZERO_BARRIER for v in pairs)
    return (f"{figure} (paper: the vanilla path rises far above its ends, weight matching removes most of the "
            f"rise, learned matching flattens it). Here, over {_pairs(len(pairs))}: the vanilla barrier "
            f"{_pm(*mean_se([v['vanilla'] for v in pairs]))} peaks at λ = "
            + (f"{peaks[0]:g} on every pair" if len(set(peaks)) == 1 else ", ".join(f"{p:g}" for p in peaks))
            + f"; weight matching removes {100 * removed[0]:.0f}%"
            + (f" ± {100 * removed[1]:.0f}%" if removed[1] is not None else "") + " of it ("
            + ("over half on every pair, as in the paper" if most else "not over half on every pair, unlike the paper")
            + f"); learned matching leaves {_pm(*lm)}, "
            + (f"{ZERO} on every pair, as in the paper." if flat else
               f"above what we count as {ZERO} on at least one pair: not flat, unlike the paper."))


def width_sentences(rows: Sequence[Mapping[str, Any]], what: str) -> list[str]:
    """Fig. 3c. The paper: after the lift alone the barrier is large, weight matching lowers it and
    learned matching brings it to about zero, for every narrow width. Also checks the lift is exact."""
    lifts = [r for r in rows if r["method"] == "lift_only"]
    if not lifts:
        return []
    worst = max(abs(r["loss_b"] - r["loss_b_unlifted"]) for r in lifts)
    out = [f"{what}: the lift changes the narrow models' test loss by at most {worst:.2e} "
           + ("(exact to rounding)." if worst < 1e-4 else "— NOT exact; see the table.")]
    for w in sorted({r["width_b"] for r in rows}, reverse=True):
        b = {r["method"]: r["loss_barrier"] for r in rows if r["width_b"] == w}
        order = b["lift_only"] >= b["weight_matching"] >= b["learned_matching"]
        zero = b["learned_matching"] <= ZERO_BARRIER
        out.append(f"width {w}: barrier {b['lift_only']:.3f} after the lift, {b['weight_matching']:.3f} with WM, "
                   f"{b['learned_matching']:.3f} with LM: "
                   + ("the paper's order lift ≥ WM ≥ LM" if order else "not the paper's order lift ≥ WM ≥ LM")
                   + (f", and LM is {ZERO} as in the paper." if zero else f"; LM is not {ZERO}, unlike the paper."))
    return out


def simplex_sentence(results: Mapping[str, Mapping[str, Any]]) -> str:
    """Fig. 4. The paper: after alignment three models span a low-loss triangle, and learned
    refinement flattens what universe weight matching leaves. One triple: no standard error."""
    methods = [m for m in ("vanilla", "weight_matching", "learned_matching") if m in results]
    worst = {m: max(results[m]["deviation"]) for m in methods}
    mean = {m: float(np.mean(results[m]["deviation"])) for m in methods}
    ordered = all(worst[a] > worst[b] and mean[a] > mean[b] for a, b in itertools.pairwise(methods))
    lm = worst.get("learned_matching")
    out = ("Fig. 4 (paper: the aligned triangle is low everywhere and learned refinement flattens it). "
           "Largest / mean deviation over the simplex: "
           + "; ".join(f"{SHORT.get(m, m)} {worst[m]:.3f} / {mean[m]:.3f}" for m in methods) + ". "
           + ("Each method lowers both below the one before it" if ordered
              else "The methods do not lower both, each below the one before it")
           + " (one triple of models, so no test).")
    if lm is not None:
        out += (f" Learned refinement leaves a largest deviation {ZERO}: flat, as in the paper." if lm <= ZERO_BARRIER
                else f" Learned refinement's largest deviation is above {ZERO}: the triangle is lower, not flat.")
    return out


def rotation_sentence(angles: Mapping[str, Sequence[float]]) -> str:
    """Fig. 5, the residual map. The paper: O_WM is a large rotation, like a random one, and
    O_LM O_WMᵀ has its eigen-angles near 0° (learned matching only nudges the map)."""
    med = {k: float(np.median(v)) for k, v in angles.items()}
    near = float(np.mean(np.asarray(angles["O_LM O_WMᵀ"]) < SMALL_ROTATION_DEG))
    nudge = med["O_LM O_WMᵀ"] <= SMALL_ROTATION_DEG
    random_like = abs(med["O_WM"] - med["random O"]) <= 15.0
    return (f"Fig. 5 (paper: O_WM is a large rotation and O_LM O_WMᵀ stays near the identity). Median eigen-angle: "
            f"O_WM {med['O_WM']:.1f}° (a Haar-random O: {med['random O']:.1f}°), O_LM O_WMᵀ "
            f"{med['O_LM O_WMᵀ']:.1f}° ({100 * near:.0f}% of its angles below {SMALL_ROTATION_DEG:g}°). "
            + ("O_WM is as large as a random rotation" if random_like else "O_WM is not like a random rotation")
            + " and learned matching " + ("only nudges it: as in the paper." if nudge
                                          else f"turns it by more than {SMALL_ROTATION_DEG:g}° in the median: "
                                               "unlike the paper."))


def lm_init_sentence(histories: Mapping[str, Mapping[str, Sequence[float]]], paper_epochs: int = 15) -> str:
    """Fig. 8. The paper: from weight matching the test barrier vanishes within one or two epochs;
    from the identity a barrier remains after `paper_epochs` epochs."""
    wm, ident = histories["weight_matching"], histories["identity"]
    early = [b for e, b in zip(wm["epoch"], wm["test_barrier"], strict=True) if 1 <= e <= 2]
    fast = bool(early) and min(early) <= ZERO_BARRIER
    stays = ident["test_barrier"][-1] > ZERO_BARRIER and ident["test_barrier"][-1] > wm["test_barrier"][-1]
    epochs = wm["epoch"][-1]
    by = f"by epoch {min(2, epochs)}"
    return (f"Fig. 8 (paper: from weight matching the barrier vanishes within 1-2 epochs; from the identity one "
            f"remains after {paper_epochs}). Here, over {epochs} epoch{'s' if epochs != 1 else ''}: from weight "
            f"matching {wm['test_barrier'][0]:.3f} → {wm['test_barrier'][-1]:.3f}, "
            + (f"{ZERO} {by}, as in the paper" if fast else f"not {ZERO} {by}, unlike the paper")
            + f"; from the identity {ident['test_barrier'][0]:.3f} → {ident['test_barrier'][-1]:.3f}, "
            + ("a barrier remains, above the weight-matching run's last, as in the paper." if stays
               else "no larger barrier remains, unlike the paper.")
            + ("" if epochs >= paper_epochs else f" (The run is {epochs} epoch{'s' if epochs != 1 else ''} long, "
                                                f"not {paper_epochs}.)"))


def soft_sentence(rows: Sequence[Mapping[str, Any]], original_loss_b: float) -> str:
    """Fig. 9 (App. D). The paper: soft permutations reach a lower loss in the middle of the path,
    but lose the exact endpoint: aligned B no longer computes B's function. Per λ sampler, soft
    against hard learned matching with the same sampler."""
    def mid(r: Mapping[str, Any]) -> float:
        return r["losses"][r["lambdas"].index(0.5)] if 0.5 in r["lambdas"] else r["losses"][len(r["losses"]) // 2]

    out = ["Fig. 9 (paper: soft matching lowers the middle of the path but its endpoint B is no longer model B)."]
    samplers = dict.fromkeys(r.get("lambda_sampler") for r in rows if r["method"] == "soft")
    for sampler in samplers:
        soft = next(r for r in rows if r["method"] == "soft" and r.get("lambda_sampler") == sampler)
        hard = next((r for r in rows if r["method"] == "learned_matching" and r.get("lambda_sampler") == sampler
                     and "perm_lr" not in r), None)
        shift = soft["loss_b"] - original_loss_b
        text = f"λ ~ {sampler}: soft matching's endpoint B differs from model B by {shift:+.2e} nats"
        text += (" (not exact, as in the paper)" if abs(shift) > 1e-4 else " (exact: unlike the paper)")
        if hard is not None:
            lower = mid(soft) < mid(hard)
            text += (f"; loss at λ = 0.5: soft {mid(soft):.4f}, hard {mid(hard):.4f}: "
                     + ("lower, as in the paper" if lower else "not lower, unlike the paper")
                     + f"; barrier soft {soft['loss_barrier']:.4f}, hard {hard['loss_barrier']:.4f}")
            if soft["loss_barrier"] < hard["loss_barrier"] and not lower:
                text += " (soft's lower barrier comes from its changed endpoint, not from a lower middle)"
        out.append(text + ".")
    return " ".join(out)


def table3_sentence(kind: str, profile: Any) -> str:
    """Table 3: the settings in which a profile's recipe differs from the paper's, by name."""
    ours = recipe_settings(kind, profile)
    differ = [k for k, v in TABLE3[kind].items() if ours[k] != v]
    model = "ViT" if kind == "vit" else "GPT-2"
    if not differ:
        return f"Table 3, {model}: the {profile.name} profile's recipe is the paper's in every setting."
    return (f"Table 3, {model}: the {profile.name} profile's recipe differs from the paper's in {len(differ)} of "
            f"{len(TABLE3[kind])} settings ({', '.join(differ)}); the table above gives both.")


def recipe_sentences(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The authors' recipe against ours (chapter 08): per method the paired difference official −
    ours, and on the pairs that ran them, which of the authors' components moves our barrier most."""
    out = []
    for method in ("weight_matching", "learned_matching"):
        mine = [r for r in rows if r["method"] == method]
        label = SHORT[method]
        recipes = paired_by_setting([r for r in mine if r.get("recipe") in ("ours", "official")], "recipe", "ours")
        for p in recipes:
            word = {True: "resolved", False: "not resolved", None: "one pair"}[p.resolved]
            side = "higher" if p.mean > 0 else "lower" if p.mean < 0 else "the same"
            every = p.n > 1 and (all(d > 0 for d in p.differences) or all(d < 0 for d in p.differences))
            out.append(f"{label}, the authors' recipe minus ours: {p.mean:+.3f}"
                       + (f" ± {p.se:.3f}" if p.se is not None else "")
                       + f" (positive on {p.positive} of {_pairs(p.n)}; {word}): the authors' barrier is {side} "
                       + ("on every pair." if every else "in the mean."))
        parts = paired_by_setting([r for r in mine if r.get("recipe") == "ours" or str(r.get("recipe")).startswith("ours +")],
                                  "recipe", "ours")
        if parts:
            biggest = max(parts, key=lambda p: abs(p.mean))
            where = "on this pair" if biggest.n == 1 else f"over {_pairs(biggest.n)}"
            text = (f"{label}, one component of the authors' at a time on our recipe ({_pairs(biggest.n)}): "
                    + "; ".join(f"{p.larger.removeprefix('ours + ')} {p.mean:+.3f}" for p in parts) + ".")
            if abs(biggest.mean) < NEGLIGIBLE:
                text += f" None moves the barrier by {NEGLIGIBLE:g} nats or more {where}."
            else:
                text += f" The largest change {where} comes from {biggest.larger.removeprefix('ours + ')}."
            out.append(text)
    return out


def symmetry_sentences(rows: Sequence[Mapping[str, Any]], labels: Mapping[str, str]) -> list[str]:
    """Chapter 02 (the paper's Table 1 of classes): per model, whether every transform kept the
    function to float32 rounding (largest |Δ logit| / largest |logit| ≤ 1e-5), how far the weights
    moved, whether the canonical form absorbs the invertible class, and which straight paths from
    a model to its own transformed copy climb a barrier."""
    out = []
    for kind in dict.fromkeys(r["kind"] for r in rows):
        mine = [r for r in rows if r["kind"] == kind]
        worst = max(mine, key=lambda r: r["logit_deviation"] / r["logit_scale"])
        ratio = worst["logit_deviation"] / worst["logit_scale"]
        text = (f"{kind}: the largest change of any logit, relative to the largest logit, is {ratio:.1e} "
                f"({labels[worst['method']]}): "
                + ("every class keeps the function to float32 rounding" if ratio <= 1e-5
                   else "NOT at float32 rounding; see the table") + ".")
        moved = [r for r in mine if r["weight_distance"] > 0.1]
        if moved:
            low, high = min(r["weight_distance"] for r in moved), max(r["weight_distance"] for r in moved)
            verb = "moves" if len(moved) == 1 else "move"
            text += f" {len(moved)} of {len(mine)} classes {verb} the canonical weights by {low:.2f} to {high:.2f}."
        inv = next((r for r in mine if r["method"] == "invertible"), None)
        if inv is not None and inv.get("raw_weight_distance") is not None:
            absorbed = inv["weight_distance"] < 1e-5 < inv["raw_weight_distance"]
            text += (f" The invertible class moves the raw weights by {inv['raw_weight_distance']:.2f} and the canonical "
                     f"ones by {inv['weight_distance']:.1e}: "
                     + ("the canonical form absorbs it." if absorbed else "the canonical form does NOT absorb it."))
        climbs = [labels[r["method"]] for r in mine if r["loss_barrier"] > ZERO_BARRIER]
        flat = [labels[r["method"]] for r in mine if r["loss_barrier"] <= 1e-6]
        text += (f" The straight path to the transformed copy climbs a barrier above {ZERO_BARRIER:g} nats for "
                 f"{len(climbs)} class{'es' if len(climbs) != 1 else ''}" + (f" ({', '.join(climbs)})" if climbs else "")
                 + (f" and is flat to 1e-6 for {', '.join(flat)}." if flat else "."))
        if inv is not None and inv.get("vanilla_loss_barrier") is not None:
            text += (f" Interpolating the raw weights after the invertible transform climbs "
                     f"{inv['vanilla_loss_barrier']:.3f} nats.")
        out.append(text)
    return out
