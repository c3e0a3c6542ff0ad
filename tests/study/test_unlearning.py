"""Unlearning: forget sets, retraining that never sees a forgotten sample, ManiF-SMC as its
authors' script runs it (anchors from the original, fixed; a fresh surrogate every batch; the
erased label on the positive; the clamp), the attacks and the verdicts on planted cases."""

import math

import numpy as np
import pytest
import torch
from helpers import single_thread  # noqa: F401  (autouse fixture: one torch thread)
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from lmc_study import experiments
from lmc_study import unlearning as U
from lmc_study import unlearning_metrics as UM
from lmc_study import unlearning_study as US
from lmc_study.data import ImageDataset
from lmc_study.models import build_model
from lmc_study.profiles import get_profile
from lmc_study.stats import holm, paired_interval
from lmc_study.train import train_model

CPU = torch.device("cpu")
# A ViT shaped for Fashion-MNIST (28x28, 1 channel, 10 classes), a few steps per epoch.
TINY = {
    "device": "cpu", "eval.batch_size": 256, "eval.test_images": 64, "vit.patch_size": 7, "vit.embed_dim": 16,
    "vit.depth": 1, "vit.num_heads": 2, "vit.mlp_dim": 32, "vit.train_subset": 128, "vit.epochs": 2,
    "vit.batch_size": 32, "vit.warmup_epochs": 0.5, "unlearn.batch_size": 8, "unlearn.k": 3,
    "unlearn.tune_finetune_steps": (3,),
}
MEAN, STD = 0.5, 0.25


def tiny():
    return get_profile("smoke", TINY)


def images_with_ids(n: int, seed: int = 0, side: int = 28, classes: int = 10) -> ImageDataset:
    """Random uint8 images whose first two pixels spell their row number (id = p0 + 256 p1)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, side, side), generator=g, dtype=torch.uint8)
    ids = torch.arange(n)
    images[:, 0, 0, 0], images[:, 0, 0, 1] = (ids % 256).to(torch.uint8), (ids // 256).to(torch.uint8)
    labels = torch.randint(0, classes, (n,), generator=g)
    return ImageDataset(images=images, labels=labels, num_classes=classes, class_names=[str(c) for c in range(classes)],
                        mean=(MEAN,), std=(STD,), name="planted", split="train", source_index=ids.clone())


def decode_ids(x: torch.Tensor) -> set[int]:
    """Row numbers of a normalised batch (the inverse of the batches' (v/255 - mean)/std)."""
    pixels = torch.round((x[:, 0, 0, :2].double() * STD + MEAN) * 255).long()
    return set((pixels[:, 0] + 256 * pixels[:, 1]).tolist())


# -- forget sets ----------------------------------------------------------------------------------

def test_forget_set_is_a_disjoint_seeded_partition():
    data = images_with_ids(50)
    split = U.forget_set(data, 12, seed=3)
    f, r = split.forget_index.tolist(), split.retain_index.tolist()
    assert len(f) == 12 and len(r) == 38 and not set(f) & set(r) and sorted(f + r) == list(range(50))
    assert torch.equal(split.forget.images, data.images[split.forget_index])
    assert torch.equal(split.retain.labels, data.labels[split.retain_index])
    again, other = U.forget_set(data, 12, seed=3), U.forget_set(data, 12, seed=4)
    assert again.forget_index.tolist() == f and again.fingerprint() == split.fingerprint()
    assert other.forget_index.tolist() != f and other.fingerprint() != split.fingerprint()
    blocks = torch.arange(50 * 4).view(50, 4)  # token blocks take the same rows
    assert torch.equal(U.forget_set(blocks, 12, seed=3).forget, blocks[split.forget_index])


def test_forget_class_erases_every_image_of_the_class_and_keys_the_source():
    data = images_with_ids(120)
    split = U.forget_class(data, 3)
    assert (split.forget.labels == 3).all() and not (split.retain.labels == 3).any()
    assert len(split.forget) + len(split.retain) == 120 and len(split.forget) == int((data.labels == 3).sum())
    other = images_with_ids(120, seed=1)  # other images, other labels: another cache key
    assert U.forget_class(other, 3).fingerprint() != split.fingerprint()
    with pytest.raises(ValueError, match="forget class 10 is not a class of planted"):
        U.forget_class(data, 10)


@pytest.mark.parametrize("n", [0, 50, 51])
def test_forget_set_size_out_of_range_is_a_clear_error(n):
    with pytest.raises(ValueError, match=r"between 1 and 49: the training split has 50 samples"):
        U.forget_set(images_with_ids(50), n, seed=0)


def test_unknown_method_and_missing_model_are_clear_errors():
    data = images_with_ids(10)
    with pytest.raises(ValueError, match=r"unknown unlearning method 'forgetful'; valid methods: retrain, finetune"):
        U.unlearn(nn.Linear(1, 1), "forgetful", data, data, tiny())
    with pytest.raises(ValueError, match=r"finetune starts from the trained model"):
        U.unlearn(None, "finetune", data, data, tiny())


# -- retraining -----------------------------------------------------------------------------------

def test_retrain_never_sees_a_forgotten_sample_and_sees_every_retained_one():
    data = images_with_ids(96)
    split = U.forget_set(data, 20, seed=1)
    seen: set[int] = set()

    def record(module, args):
        if isinstance(module, VisionTransformer) and module.training:
            seen.update(decode_ids(args[0]))

    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        model = U.unlearn(None, "retrain", split.forget, split.retain, tiny(), seed=0, device=CPU)
    finally:
        handle.remove()
    assert seen == set(split.retain_index.tolist())  # every retained image, no forgotten one
    assert not model.training and model.lmc_meta["method"] == "retrain" and model.lmc_meta["wall_s"] > 0


def test_fit_on_the_profile_split_is_train_model():
    """`retrain` uses the trainer's recipe: on the trainer's own split it gives its weights; and
    it leaves the caller's global RNG as it was."""
    profile = tiny()
    train = experiments.study_data("vit", profile, CPU).train.dataset
    rng = torch.get_rng_state()
    ours = U.fit(profile, train, 0, CPU)
    assert torch.equal(torch.get_rng_state(), rng)
    theirs = train_model("vit", profile, 0, progress=False)
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- the approximate methods ----------------------------------------------------------------------

def test_wrong_labels_are_wrong_in_range_and_seeded():
    data = images_with_ids(200)
    a, b = U._wrong_labels(data, 0), U._wrong_labels(data, 0)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.images, data.images)
    assert (a.labels != data.labels).all() and a.labels.min() >= 0 and a.labels.max() < 10
    assert not torch.equal(a.labels, U._wrong_labels(data, 1).labels)


@pytest.mark.parametrize("method", ["finetune", "gradient_ascent", "random_labels", "manif_smc", "manif_smc_trained",
                                    "manif_smc_positive_label"])
def test_methods_change_a_copy_and_leave_the_original(method):
    profile = tiny()
    data = images_with_ids(64)
    split = U.forget_set(data, 16, seed=0)
    torch.manual_seed(0)
    original = build_model("vit", profile, num_classes=10, in_chans=1, img_size=28).eval()
    before = {k: v.clone() for k, v in original.state_dict().items()}
    out = U.unlearn(original, method, split.forget, split.retain, profile, seed=0, device=CPU)
    after = original.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(not torch.equal(before[k], v) for k, v in out.state_dict().items())
    assert not out.training and out.lmc_meta["method"] == method
    if method.startswith("manif"):
        assert 0.0 <= out.lmc_meta["hinge_open"] <= 1.0 and math.isfinite(out.lmc_meta["margin_mean"])


def test_neighbours_are_the_most_cosine_similar_retained_samples():
    z_retain = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [9.0, 1.0, 0.0],  # norm does not matter
                             [0.0, 0.0, 1.0], [1.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    z_forget = torch.tensor([[1.0, 0.05, 0.0], [0.0, 0.0, 2.0]])
    nb = U.neighbours(z_forget, z_retain, k=3)
    assert nb[0].tolist() == [0, 2, 4] and nb[1, 0].item() == 3  # row 1: the others tie at cosine 0
    with pytest.raises(ValueError, match="k = 7 neighbours asked of 6 retained samples"):
        U.neighbours(z_forget, z_retain, k=7)


class PlantedLatent(nn.Module):
    """A 'model' whose latent is the image's first two pixels and whose logits are that latent."""

    def forward(self, x):
        return x[:, 0, 0, :2]


def test_anchors_are_the_originals_normalised_neighbour_mean(monkeypatch):
    monkeypatch.setattr(U, "features", lambda m, x: (m(x), m(x)))
    def image(a, b):
        img = torch.zeros(1, 1, 2, 2, dtype=torch.uint8)
        img[0, 0, 0, 0], img[0, 0, 0, 1] = a, b
        return img
    def dataset(points):
        images = torch.cat([image(a, b) for a, b in points])
        return ImageDataset(images=images, labels=torch.zeros(len(points), dtype=torch.long), num_classes=2,
                            class_names=["0", "1"], mean=(0.0,), std=(1 / 255,), name="planted", split="train")
    retain = dataset([(10, 0), (0, 10), (30, 3), (3, 30)])  # pixel values = latents (std 1/255)
    forget = dataset([(40, 1)])
    t = U.manif_targets(PlantedLatent(), forget, retain, k=2, batch_size=8, device=CPU)
    unit = torch.nn.functional.normalize(torch.tensor([[10.0, 0.0], [30.0, 3.0]]), dim=-1)
    assert t.positives.tolist() == [0] and torch.allclose(t.anchors[0], unit.mean(0), atol=1e-6)


def test_margin_and_loss_by_hand_the_clamp_and_the_margin_only_acts_through_the_hinge():
    z_e, z_p, c = torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.5]])
    # MSE(z_e, c) = (1.5² + 0.5²)/2 = 1.25; MSE(z_p, c) = (0.25 + 0.25)/2 = 0.25
    assert torch.allclose(U.smc_margin(z_e, z_p, c), torch.tensor(1.0))
    logits, y = torch.tensor([[0.0, 0.0]]), torch.tensor([0])  # CE = ln 2

    def loss_and_grad(margin: float) -> tuple[float, torch.Tensor]:
        z = z_e.clone().requires_grad_(True)
        loss = U.manif_loss(z, z_p, c, logits, y, margin, scale=0.1)
        loss.backward()
        return loss.item(), z.grad

    open_loss, open_grad = loss_and_grad(1.0)
    assert math.isclose(open_loss, 0.1 * (0.25 - 1.25 + 1.0 + math.log(2)), rel_tol=1e-6)
    assert torch.equal(open_grad, loss_and_grad(0.5)[1])  # open hinge: the margin leaves the gradient alone
    closed_loss, closed_grad = loss_and_grad(-2.0)  # clamped at 0: no loss, no gradient
    assert closed_loss == 0.0 and torch.equal(closed_grad, torch.zeros_like(z_e))


def _manif_run(monkeypatch, method, profile=None):
    """Run ``method`` on a planted split, recording every fresh initialisation, the anchors'
    source and every call of the loss."""
    profile = profile or tiny()
    data = images_with_ids(64)
    split = U.forget_set(data, 20, seed=0)
    torch.manual_seed(0)
    original = build_model("vit", profile, num_classes=10, in_chans=1, img_size=28).eval()
    seen = {"fresh": [], "targets_from": [], "labels": [], "margins": []}
    fresh, targets, loss = U.fresh_init, U.manif_targets, U.manif_loss

    def spy_fresh(p, d, seed):
        seen["fresh"].append(seed)
        return fresh(p, d, seed)

    def spy_targets(model, *args):
        seen["targets_from"].append(model)
        return targets(model, *args)

    def spy_loss(z_e, z_p, c, logits, labels, margin, scale):
        seen["labels"].append(labels.clone())
        seen["margins"].append(float(margin))
        return loss(z_e, z_p, c, logits, labels, margin, scale)

    monkeypatch.setattr(U, "fresh_init", spy_fresh)
    monkeypatch.setattr(U, "manif_targets", spy_targets)
    monkeypatch.setattr(U, "manif_loss", spy_loss)
    out = U.unlearn(original, method, split.forget, split.retain, profile, seed=0, device=CPU)
    return original, split, out, seen


def test_manif_smc_follows_the_released_script(monkeypatch):
    """Anchors from the original (once); a fresh initialisation for every batch, so α changes
    from batch to batch; the cross-entropy scores the positive with the *erased* sample's label."""
    original, split, out, seen = _manif_run(monkeypatch, "manif_smc")
    batches = math.ceil(20 / 8)
    assert seen["targets_from"] == [original]  # neighbours from the original model, computed once
    assert len(seen["fresh"]) == batches and len(set(seen["fresh"])) == batches  # a new init per batch
    assert len(set(seen["margins"])) == batches  # α recomputed every batch
    order = torch.randperm(20, generator=torch.Generator().manual_seed(0)).split(8)
    for rows, labels in zip(order, seen["labels"], strict=True):
        assert torch.equal(labels, split.forget.labels[rows])  # the erased samples' own labels
    assert out.lmc_meta["ce_label"] == "erased"


def test_the_ablation_scores_the_positive_with_its_own_label(monkeypatch):
    _, split, out, seen = _manif_run(monkeypatch, "manif_smc_positive_label")
    assert out.lmc_meta["ce_label"] == "positive"
    erased = split.forget.labels[torch.randperm(20, generator=torch.Generator().manual_seed(0))]
    assert not torch.equal(torch.cat(seen["labels"]), erased)  # random labels: the positives' differ


def test_trained_surrogate_is_a_bezier_with_frozen_ends_and_a_trained_midpoint(monkeypatch):
    profile = tiny()
    torch.manual_seed(0)
    original = build_model("vit", profile, num_classes=10, in_chans=1, img_size=28)
    torch.manual_seed(1)
    current = build_model("vit", profile, num_classes=10, in_chans=1, img_size=28)
    bezier = U.BezierSurrogate(original, current, lr=1e-2)
    ends = [p.detach().clone() for p in original.parameters()]
    for got, a, b in zip(bezier.point(0.5, current), ends, current.parameters(), strict=True):
        assert torch.allclose(got, (a + b) / 2, atol=1e-6)  # the control point starts at the midpoint
    x = torch.randn(8, 1, 28, 28)
    y = torch.randint(0, 10, (8,))
    bezier.step(current, x, y, 0.3)
    for got, a in zip(bezier.point(0.0, current), ends, strict=True):
        assert torch.equal(got, a)  # t = 0: the original, untouched
    for got, b in zip(bezier.point(1.0, current), current.parameters(), strict=True):
        assert torch.equal(got, b)  # t = 1: the current model
    moved = any(not torch.allclose(g, (a + b) / 2) for g, a, b in
                zip(bezier.point(0.5, current), ends, current.parameters(), strict=True))
    assert moved and all(torch.equal(p, a) for p, a in zip(original.parameters(), ends, strict=True))
    _, _, out, seen = _manif_run(monkeypatch, "manif_smc_trained")
    assert seen["fresh"] == [] and len(set(seen["margins"])) > 1  # no fresh init; α still per batch


# -- metrics ----------------------------------------------------------------------------------------

def test_auc_its_interval_and_threshold_attack_on_known_distributions():
    assert UM.auc([1.0, 2.0], [2.0, 3.0]) == 0.875  # 3 wins and one tie out of 4 pairs
    assert UM.auc([5.0], [5.0]) == 0.5
    # Hanley-McNeil at A = 0.5, 100 vs 100: Q1 = Q2 = 1/3, var = (1/4 + 2 · 99/12) / 100²
    lo, hi = UM.auc_interval(0.5, 100, 100)
    half = 1.96 * math.sqrt((0.25 + 2 * 99 / 12) / 100 ** 2)
    assert math.isclose(lo, 0.5 - half) and math.isclose(hi, 0.5 + half)
    assert UM.auc_interval(0.999, 5, 5)[1] == 1.0 and UM.auc_interval(1.0, 10, 10) == (1.0, 1.0)  # clipped
    rng = np.random.default_rng(0)
    members, others = rng.normal(0.0, 1.0, 20_000), rng.normal(1.0, 1.0, 20_000)
    # Equal-variance Gaussians one s.d. apart: AUC = Φ(1/√2), best threshold at the midpoint
    # with balanced accuracy Φ(1/2).
    phi = lambda v: 0.5 * (1 + math.erf(v / math.sqrt(2)))  # noqa: E731
    assert abs(UM.auc(members, others) - phi(1 / math.sqrt(2))) < 0.01
    attack = UM.LossThresholdAttack.fit(members, others)
    assert abs(attack.threshold - 0.5) < 0.1 and abs(attack.calibration_accuracy - phi(0.5)) < 0.01
    same = UM.LossThresholdAttack.fit([1.0, 2.0], [1.0, 2.0])  # nothing to learn: nobody is a member
    assert same.threshold == -math.inf and same.member_rate([0.0, 1.0]) == 0.0


def test_loss_attack_is_read_where_it_was_not_calibrated():
    """Calibration halves separate perfectly (members low, non-members high), the scoring halves
    are swapped: an attack read where it was fit would report 100%, not 0%."""
    fit, _ = UM.calibration_split(8)
    cal = set(fit.tolist())
    retain = torch.tensor([0.1 if i in cal else 5.0 for i in range(8)], dtype=torch.float64)
    test = torch.tensor([5.0 if i in cal else 0.1 for i in range(8)], dtype=torch.float64)
    m = UM.loss_attack(torch.full((4,), 0.1, dtype=torch.float64), retain, test, torch.full((4,), 5.0,
                                                                                         dtype=torch.float64))
    assert m["mia_calibration_acc"] == 1.0 and m["mia_heldout_acc"] == 0.0 and m["mia_heldout_auc"] == 0.0
    assert m["mia_forget_rate"] == 1.0 and m["mia_auc"] == 1.0


def test_latent_attack_separates_separable_latents_and_not_identical_ones():
    g = torch.Generator().manual_seed(0)
    members, others = torch.randn(400, 8, generator=g) + 1.5, torch.randn(400, 8, generator=g)
    attack = UM.LatentAttack.fit(members[:200], others[:200], epochs=5, seed=0)
    assert UM.auc(-attack.scores(members[200:]), -attack.scores(others[200:])) > 0.95
    same = UM.LatentAttack.fit(others[:200], torch.randn(200, 8, generator=g), epochs=5, seed=0)
    assert abs(UM.auc(-same.scores(others[200:]), -same.scores(torch.randn(200, 8, generator=g))) - 0.5) < 0.1


def test_eval_sets_keep_the_erased_class_apart_and_the_heldout_half_unseen():
    test = images_with_ids(200)
    random_sets = UM.EvalSets.build(test, test, test)
    cal, score = UM.calibration_split(200)
    assert set(random_sets.heldout.source_index.tolist()) == set(score.tolist())  # not the calibration half
    cls = UM.EvalSets.build(test, test, test, forget_class=4)
    assert not (cls.test.labels == 4).any() and (cls.heldout.labels == 4).all()
    assert cls.forget_test is cls.heldout and len(cls.test) + len(cls.heldout) == 200


# -- summaries and verdicts ------------------------------------------------------------------------

def test_paired_t_interval_holm_and_relations():
    rows = [{"method": m, "seed": s, "loss_barrier": v, "alignment": "vanilla", "setting": "random"}
            for m, values in (("finetune", [0.1, 0.4, 0.3]), ("retrain_other", [0.2, 0.2, 0.2]))
            for s, v in enumerate(values)]
    d = US.paired(rows, "loss_barrier", "finetune", "retrain_other", alignment="vanilla")
    se = np.std([-0.1, 0.2, 0.1], ddof=1) / math.sqrt(3)
    assert d["n"] == 3 and d["n_lower"] == 1 and math.isclose(d["mean_diff"], 0.2 / 3) and math.isclose(d["se"], se)
    assert math.isclose(d["hi"] - d["mean_diff"], 4.302652729911275 * se, rel_tol=1e-9)  # t(0.975, 2 df)
    assert d["median"] == pytest.approx(0.1) and d["values"] == pytest.approx([-0.1, 0.2, 0.1])
    assert US.relation(d, 0.05) == "cannot tell"  # the interval spans 0 and the margin
    assert US.relation({**d, "lo": -0.01, "hi": 0.02}, 0.05) == "no difference"
    assert US.relation({**d, "lo": 0.1, "hi": 0.3, "p_holm": 0.01}, 0.05) == "higher"
    assert US.relation({**d, "lo": 0.1, "hi": 0.3, "p_holm": 0.2}, 0.05) == "cannot tell"
    assert holm([0.01, 0.04, 0.03, None]) == [pytest.approx(0.03), pytest.approx(0.06), pytest.approx(0.06), None]
    assert paired_interval([0.5])["lo"] is None
    table = US.summary(rows, ["loss_barrier"])
    assert [t["method"] for t in table] == ["finetune", "retrain_other"] and table[1]["loss_barrier"] == "0.200 ± 0.000"
    with pytest.raises(ValueError, match="no seed has loss_barrier for both 'finetune' and 'original'"):
        US.paired(rows, "loss_barrier", "finetune", "original")


def _metric_rows(original_forget, retrain_forget, test_acc=None, auc=0.5):
    rows = []
    for s, (o, r) in enumerate(zip(original_forget, retrain_forget, strict=True)):
        for m in U.MODELS:
            forget = o if m == "original" else r
            acc = (test_acc or {}).get(m, [0.85] * len(original_forget))[s]
            rows.append({"setting": "random", "method": m, "seed": s, "forget_acc": forget, "test_acc": acc,
                         "mia_auc": auc, "mia_heldout_auc": 0.6, "mia_heldout_auc_lo": 0.55, "latent_auc": 0.5,
                         "latent_own_heldout_auc": 0.5, "latent_own_heldout_auc_lo": 0.45})
    return rows


def test_positive_control_names_its_criterion_and_refuses_a_ranking_without_one():
    sep = US.positive_control(_metric_rows([1.0, 0.98, 1.0], [0.8, 0.82, 0.79]), "random")
    assert sep["separates"].startswith("forget accuracy 19.0 points above retraining's")
    by_auc = US.positive_control(_metric_rows([0.8, 0.8, 0.8], [0.8, 0.8, 0.8], auc=0.7), "random")
    assert by_auc["separates"] == "loss-attack AUC 0.700 ≥ 0.6"
    assert sep["loss_sees_membership"] and not sep["latent_sees_membership"]  # interval above 0.5 or not
    flat = _metric_rows([0.8, 0.81, 0.8], [0.8, 0.8, 0.8])
    assert US.positive_control(flat, "random")["separates"] is None
    assert US.verdicts(flat, [], "random")[0].startswith("**No positive control.**")


def test_damaged_is_a_drop_beyond_the_retrained_models_spread():
    acc = {"retrain": [0.85, 0.86, 0.84], "retrain_other": [0.84, 0.86, 0.85],
           "gradient_ascent": [0.70, 0.72, 0.69], "finetune": [0.845, 0.85, 0.84]}
    spread, hurt = US.damaged(_metric_rows([1.0] * 3, [0.8] * 3, test_acc=acc), "random")
    assert math.isclose(spread, 0.01) and set(hurt) == {"gradient_ascent"}


def test_study_end_to_end_on_a_tiny_profile(tmp_path):
    """Both settings, two seeds: every model has a metrics row and a barrier row per alignment,
    the class setting's test images exclude the erased class, and each baseline's chosen
    (lr, length) is the eligible candidate nearest its target."""
    from lmc_core.cache import CheckpointCache

    profile = get_profile("smoke", {
        **{k: v for k, v in TINY.items() if not k.startswith("unlearn.")}, "vit.epochs": 1, "vit.val_images": 200,
        "eval.test_images": 300, "unlearn.random_images": 200, "unlearn.random_epochs": 3,
        "unlearn.forget_size": 20, "unlearn.class_images": 300, "unlearn.seeds": (0, 1), "unlearn.eval_retain": 100,
        "unlearn.barrier_images": 100, "unlearn.lambdas": 3, "unlearn.tune_lrs": (1e-4, 1e-3),
        "unlearn.tune_epochs": (1,), "unlearn.tune_finetune_steps": (5,), "unlearn.attack_epochs": 2,
        "align.lm_epochs": 1, "align.lm_steps_per_epoch": 2, "align.wm_iterations": 2})
    out = US.study(profile, CPU, cache=CheckpointCache(tmp_path))
    assert len(out["metrics"]) == 2 * 2 * len(U.MODELS)
    assert len(out["barriers"]) == 2 * 2 * (len(U.MODELS) - 1) * len(US.ALIGNMENTS)
    assert all(math.isfinite(r["loss_barrier"]) for r in out["barriers"])
    assert all("forget_test_acc" in r for r in out["metrics"] if r["setting"] == "class")
    for record in out["tuning"].values():
        for entry in record["methods"].values():
            eligible = [c for c in entry["candidates"] if c["eligible"]]
            if eligible:
                best = min(eligible, key=lambda c: (c["distance"], -c["retain_acc"]))
                assert entry["chosen"] == {"lr": best["lr"], "length": best["length"]}
    again = US.study(profile, CPU, cache=CheckpointCache(tmp_path))  # every model from the cache: same rows
    assert [r["forget_acc"] for r in again["metrics"]] == [r["forget_acc"] for r in out["metrics"]]
