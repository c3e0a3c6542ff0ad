"""Unlearning: forget sets, retraining that never sees a forgotten sample, the ManiF-SMC pieces,
and the metrics on planted cases with known answers."""

import math

import numpy as np
import pytest
import torch
from helpers import single_thread  # noqa: F401  (autouse fixture: one torch thread)
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from lmc_study import experiments
from lmc_study import unlearning as U
from lmc_study import unlearning_study as US
from lmc_study.data import ImageDataset
from lmc_study.models import build_model
from lmc_study.profiles import get_profile
from lmc_study.train import train_model

CPU = torch.device("cpu")
# A ViT shaped for Fashion-MNIST (28x28, 1 channel, 10 classes), a few steps per epoch.
TINY = {
    "device": "cpu", "eval.batch_size": 256, "eval.test_images": 64, "vit.patch_size": 7, "vit.embed_dim": 16,
    "vit.depth": 1, "vit.num_heads": 2, "vit.mlp_dim": 32, "vit.train_subset": 128, "vit.epochs": 2,
    "vit.batch_size": 32, "vit.warmup_epochs": 0.5, "unlearn.batch_size": 8, "unlearn.k": 3,
    "unlearn.finetune_steps": 3, "unlearn.surrogate_steps": 2,
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


@pytest.mark.parametrize("method", ["finetune", "gradient_ascent", "random_labels", "manif_smc", "manif_smc_trained"])
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
    anchor, positive = U.anchor_positive(z_retain[nb])
    assert torch.allclose(anchor[0], torch.tensor([11.0, 2.0, 0.0]) / 3)
    assert torch.equal(positive[0], z_retain[0])
    with pytest.raises(ValueError, match="k = 7 neighbours asked of 6 retained samples"):
        U.neighbours(z_forget, z_retain, k=7)


def test_margin_and_loss_by_hand_and_the_margin_only_acts_through_the_hinge():
    z_e = torch.tensor([[2.0, 0.0]])
    z_nb = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # anchor (0.5, 0.5), positive (1, 0)
    # MSE(z_e, c) = (1.5² + 0.5²)/2 = 1.25; MSE(z_p, c) = (0.25 + 0.25)/2 = 0.25
    assert torch.allclose(U.smc_margins(z_e, z_nb), torch.tensor([1.0]))
    logits, y = torch.tensor([[0.0, 0.0]]), torch.tensor([0])  # CE = ln 2
    x = torch.zeros(1, 1)

    def loss_and_grad(margin: float) -> tuple[float, torch.Tensor]:
        z = z_e.clone().requires_grad_(True)
        loss = U.manif_loss(z, z_nb, logits, y, x, torch.tensor([margin]), scale=0.1)
        loss.backward()
        return loss.item(), z.grad

    open_loss, open_grad = loss_and_grad(1.0)
    assert math.isclose(open_loss, 0.1 * (0.25 - 1.25 + 1.0 + math.log(2)), rel_tol=1e-6)
    assert torch.equal(open_grad, loss_and_grad(0.5)[1])  # open hinge: the margin leaves the gradient alone
    closed_loss, closed_grad = loss_and_grad(-2.0)
    assert closed_loss == 0.0 and torch.equal(closed_grad, torch.zeros_like(z_e))


def test_surrogate_is_the_midpoint_with_a_fresh_initialisation():
    profile = tiny()
    data = images_with_ids(4)
    torch.manual_seed(0)
    model = build_model("vit", profile, num_classes=10, in_chans=1, img_size=28)
    surrogate = U.smc_surrogate(model, profile, data, seed=5, t=0.5)
    torch.manual_seed(5)
    fresh = build_model("vit", profile, num_classes=10, in_chans=1, img_size=28)
    s, m, f = surrogate.state_dict(), model.state_dict(), fresh.state_dict()
    assert all(torch.allclose(s[k], (m[k] + f[k]) / 2, atol=1e-7) for k in s)
    assert any(not torch.equal(m[k], f[k]) for k in m)  # the fresh init is not the model's


# -- metrics ----------------------------------------------------------------------------------------

def test_auc_and_threshold_attack_on_known_distributions():
    assert U.auc([1.0, 2.0], [2.0, 3.0]) == 0.875  # 3 wins and one tie out of 4 pairs
    assert U.auc([5.0], [5.0]) == 0.5
    rng = np.random.default_rng(0)
    members, others = rng.normal(0.0, 1.0, 20_000), rng.normal(1.0, 1.0, 20_000)
    # Equal-variance Gaussians one s.d. apart: AUC = Φ(1/√2), best threshold at the midpoint
    # with balanced accuracy Φ(1/2).
    phi = lambda v: 0.5 * (1 + math.erf(v / math.sqrt(2)))  # noqa: E731
    assert abs(U.auc(members, others) - phi(1 / math.sqrt(2))) < 0.01
    attack = U.LossThresholdAttack.fit(members, others)
    assert abs(attack.threshold - 0.5) < 0.1 and abs(attack.calibration_accuracy - phi(0.5)) < 0.01
    # The balanced accuracy is flat near its peak: the rates follow whichever threshold was found.
    assert abs(attack.member_rate(members) - phi(attack.threshold)) < 0.01
    assert abs(attack.member_rate(others) - phi(attack.threshold - 1.0)) < 0.01
    same = U.LossThresholdAttack.fit([1.0, 2.0], [1.0, 2.0])  # nothing to learn: nobody is a member
    assert same.threshold == -math.inf and same.member_rate([0.0, 1.0]) == 0.0


class ConstantLogits(nn.Module):
    """Predicts class 0 with logits (5, 0, ..., 0) whatever the image."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(classes))
        with torch.no_grad():
            self.bias[0] = 5.0

    def forward(self, x):
        return self.bias.expand(x.shape[0], -1)


def labelled(labels: list[int]) -> ImageDataset:
    n = len(labels)
    return ImageDataset(images=torch.zeros(n, 1, 2, 2, dtype=torch.uint8), labels=torch.tensor(labels),
                        num_classes=10, class_names=[str(c) for c in range(10)], mean=(0.0,), std=(1.0,),
                        name="planted", split="train")


def _split_labels(n: int, calibration: int, scoring: int) -> list[int]:
    """Labels whose calibration half (`U.calibration_split`) is all `calibration`, the rest `scoring`."""
    fit, _ = U.calibration_split(n)
    return [calibration if i in set(fit.tolist()) else scoring for i in range(n)]


def test_metrics_of_a_constructed_model():
    """The attack is fit on one half of the retained and test samples and read on the other: here
    the calibration halves separate perfectly (retained class 0, test class 1) while the scoring
    halves are swapped, so an attack read where it was fit would report 100%, not 0%."""
    low = math.log(1 + 9 * math.exp(-5))  # loss of a class-0 image
    high = 5 + low  # of any other
    retain, test = _split_labels(8, 0, 1), _split_labels(8, 1, 0)
    m = U.unlearning_metrics(ConstantLogits(), labelled([0, 0, 0, 0]), labelled(retain), labelled(test),
                             batch_size=3, device="cpu")
    assert (m["forget_acc"], m["retain_acc"], m["test_acc"]) == (1.0, 0.5, 0.5)
    assert math.isclose(m["forget_loss"], low, rel_tol=1e-6) and math.isclose(m["test_loss"], (low + high) / 2, rel_tol=1e-6)
    assert m["mia_calibration_acc"] == 1.0  # threshold at `low`: every calibration sample right
    assert m["mia_heldout_acc"] == 0.0 and m["mia_test_rate"] == 1.0  # every held-out sample wrong
    assert m["mia_forget_rate"] == 1.0
    assert m["mia_auc"] == 0.75  # each erased loss ties half the test losses and beats the other half


# -- summaries --------------------------------------------------------------------------------------

def test_paired_differences_and_summary():
    rows = [{"method": m, "seed": s, "loss_barrier": v, "alignment": "vanilla"}
            for m, values in (("finetune", [0.1, 0.4, 0.3]), ("retrain_other", [0.2, 0.2, 0.2]))
            for s, v in enumerate(values)]
    d = US.paired(rows, "loss_barrier", "finetune", "retrain_other", alignment="vanilla")
    assert d["n"] == 3 and d["n_lower"] == 1 and math.isclose(d["mean_diff"], 0.2 / 3)
    assert math.isclose(d["se"], np.std([-0.1, 0.2, 0.1], ddof=1) / math.sqrt(3))
    table = US.summary(rows, ["loss_barrier"])
    assert [t["method"] for t in table] == ["finetune", "retrain_other"] and table[1]["loss_barrier"] == "0.200 ± 0.000"
    with pytest.raises(ValueError, match="no seed has loss_barrier for both 'finetune' and 'original'"):
        US.paired(rows, "loss_barrier", "finetune", "original")
