"""The authors' recipe as options of our alignment (align.RECIPES["official"]): each option does
what it says, planted symmetries are still recovered exactly, and bad choices are refused."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_align import _data, _gpt2, _markov_batch, _max_param_gap, _planted, _vit

from lmc_core import align, barrier, canonicalize
from lmc_core.alignment import RECIPES, align_many
from lmc_core.alignment.learned import (
    LatentSymmetry,
    _validation_loss,
    _warmup_cosine,
    learn,
    sample_weights,
)
from lmc_core.alignment.weight_matching import head_similarity, residual_cross, unit_similarity
from lmc_core.canonical import canonical_forward

OFFICIAL_WM = {k: RECIPES["official"][k] for k in ("weighting", "head_cost", "unit_cost")}


@pytest.mark.parametrize("kind", ["gpt2", "vit"])
def test_authors_weight_matching_recovers_a_planted_symmetry(kind: str) -> None:
    a = canonicalize(_gpt2() if kind == "gpt2" else _vit())
    planted = _planted(a, seed=5)
    found = align(a, planted.apply(a), "weight_matching", iterations=3, **OFFICIAL_WM)
    roundtrip = planted.then(found.symmetry)
    assert torch.equal(roundtrip.heads.read, torch.eye(a.num_heads).expand(a.depth, -1, -1))
    assert torch.equal(roundtrip.mlp.read, torch.eye(a.mlp_width).expand(a.depth, -1, -1))
    assert (roundtrip.residual - torch.eye(a.width)).abs().max() < 1e-4
    assert _max_param_gap(a, found.model_b) < 1e-4
    assert barrier(a, found.model_b, _data(kind)).loss_barrier <= 1e-5


def test_layer_weighting_reads_only_weight_matrices_one_block_per_layer() -> None:
    p = {k: v.detach().double() for k, v in canonicalize(_gpt2(steps=0)).params().items()}
    eye = torch.eye(p["token_embed"].shape[1], dtype=torch.float64)
    biases = {k: v.clone() for k, v in p.items()}
    for name in ("attn_bias", "mlp_out_bias", "norm1", "norm2", "norm_final"):
        biases[name] = torch.randn_like(p[name])  # what "layer" ignores and "parameter" reads
    names = list(p)
    assert torch.equal(residual_cross(p, p, eye, names, weighting="layer"),
                       residual_cross(biases, biases, eye, names, weighting="layer"))
    assert not torch.equal(residual_cross(p, p, eye, names), residual_cross(biases, biases, eye, names))
    # one block per layer, each over its own number of vectors (units), summed over the layers
    scaled = {**p, "mlp_in": p["mlp_in"] * torch.tensor([1.0, 10.0], dtype=torch.float64).view(-1, 1, 1)}
    one = residual_cross(scaled, scaled, eye, ["mlp_in"], weighting="layer")
    per_layer = sum(units.T @ units / units.shape[0] for units in scaled["mlp_in"].transpose(1, 2))
    torch.testing.assert_close(one, per_layer)


def test_token_rows_restrict_the_token_table() -> None:
    p = {k: v.detach().double() for k, v in canonicalize(_gpt2(steps=0)).params().items()}
    eye = torch.eye(p["token_embed"].shape[1], dtype=torch.float64)
    every = torch.arange(p["token_embed"].shape[0])
    full = residual_cross(p, p, eye, ["token_embed"])
    torch.testing.assert_close(residual_cross(p, p, eye, ["token_embed"], token_rows=every), full)
    rows = every[:5]
    expected = p["token_embed"][rows].T @ p["token_embed"][rows] / 5
    torch.testing.assert_close(residual_cross(p, p, eye, ["token_embed"], token_rows=rows), expected)


def test_frobenius_head_cost_is_the_scaled_unsquared_distance() -> None:
    pa = {k: v.detach().double() for k, v in canonicalize(_gpt2(seed=1, steps=0)).params().items()}
    pb = {k: v.detach().double() for k, v in canonicalize(_gpt2(seed=2, steps=0)).params().items()}
    sim = head_similarity(pa, pb, "frobenius")
    d_aug, heads = pa["qk"].shape[-1], pa["qk"].shape[1]
    scale = math.sqrt(d_aug / ((d_aug - 1) / heads))
    expected = -(scale * (pa["qk"][1, 2] - pb["qk"][1, 3]).norm() + (pa["ov"][1, 2] - pb["ov"][1, 3]).norm())
    assert float(sim[1, 2, 3]) == pytest.approx(float(expected), rel=1e-9)
    assert torch.allclose(head_similarity(pa, pa, "frobenius").diagonal(dim1=1, dim2=2), torch.zeros(2, heads, dtype=torch.float64),
                          atol=1e-5)


@settings(max_examples=20, deadline=None)
@given(st.lists(st.floats(0.1, 10.0), min_size=64, max_size=64))
def test_normalised_l1_unit_cost_ignores_each_units_scale(scales: list[float]) -> None:
    pa = {k: v.detach().double() for k, v in canonicalize(_gpt2(seed=1, steps=0)).params().items()}
    s = torch.tensor(scales, dtype=torch.float64)
    pb = dict(pa)
    pb["mlp_in"] = pa["mlp_in"] * s  # (L, d, m): unit j's input weights
    pb["mlp_in_bias"] = pa["mlp_in_bias"] * s
    pb["mlp_out"] = pa["mlp_out"] * s.view(-1, 1)
    same = unit_similarity(pa, pa, "normalized_l1")
    torch.testing.assert_close(unit_similarity(pa, pb, "normalized_l1"), same)
    assert torch.equal(same.argmax(-1), torch.arange(64).expand(2, -1))  # each unit nearest itself


def test_warmup_cosine_schedule() -> None:
    factors = [_warmup_cosine(step, warmup=5, total=100) for step in range(101)]
    assert factors[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert factors[5] == pytest.approx(1.0) and factors[100] == pytest.approx(0.0, abs=1e-12)
    assert all(x >= y for x, y in zip(factors[4:], factors[5:], strict=False))


def test_dropout_in_the_forward_is_off_by_default_and_random_when_on() -> None:
    model = canonicalize(_gpt2())
    x = _markov_batch(torch.Generator().manual_seed(0))
    params = model.params()
    assert torch.equal(canonical_forward(params, model.config, x), canonical_forward(params, model.config, x, dropout=0.0))
    torch.manual_seed(0)
    one = canonical_forward(params, model.config, x, dropout=0.1)
    two = canonical_forward(params, model.config, x, dropout=0.1)
    assert not torch.allclose(one, two) and not torch.allclose(one, canonical_forward(params, model.config, x))


def test_learn_keeps_the_latents_of_lowest_validation_loss() -> None:
    a, b = canonicalize(_gpt2(seed=10)), canonicalize(_gpt2(seed=11))
    g = torch.Generator().manual_seed(12)
    train = [(_markov_batch(g), None) for _ in range(12)]
    val = [(_markov_batch(g), None)]
    start = align(a, b, "weight_matching", iterations=3).symmetry
    latent = LatentSymmetry(start, a.depth, a.width, a.num_heads, a.mlp_width)
    history = learn([a, b], [None, latent], train, epochs=2, lr=0.05, val_data=val, val_every=4, progress=False,
                    optimizer="adamw", weight_decay=0.01, schedule="warmup_cosine", clip_norm=1.0, dropout=0.1)
    assert history["val_step"] == [4, 8, 12, 16, 20, 24]
    best = history["val_step"][min(range(6), key=history["val_loss"].__getitem__)]
    assert history["best_step"] == [best]
    # the kept latents give the validation loss recorded at that step (same λ stream replayed)
    rng = np.random.default_rng([0, 1])
    weights = [sample_weights("uniform_0.4_0.6", 2, rng) for _ in history["val_step"]]
    at_best = _validation_loss([a.params(), b.params()], [None, latent], a.config, val,
                               weights[history["val_step"].index(best)])
    assert at_best == pytest.approx(min(history["val_loss"]), rel=1e-6)


def test_noisy_start_perturbs_the_latents_by_the_given_scale() -> None:
    a = canonicalize(_gpt2(steps=0))
    start = align(a, a, "weight_matching", iterations=1).symmetry
    plain = LatentSymmetry(start, a.depth, a.width, a.num_heads, a.mlp_width)
    noisy = LatentSymmetry(start, a.depth, a.width, a.num_heads, a.mlp_width, noise=0.01, seed=3)
    delta = torch.cat([(n - p).detach().flatten() for n, p in zip(noisy.parameters(), plain.parameters(), strict=True)])
    assert float(delta.std()) == pytest.approx(0.01, rel=0.1)
    again = LatentSymmetry(start, a.depth, a.width, a.num_heads, a.mlp_width, noise=0.01, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(noisy.parameters(), again.parameters(), strict=True))


def test_official_recipe_presets_and_errors() -> None:
    a = _gpt2(steps=0)
    data = [_data("gpt2")]
    found = align(a, a, "weight_matching", recipe="official", iterations=1)
    assert found.options["recipe"] == "official" and found.options["weighting"] == "layer"
    assert align(a, a, "weight_matching", recipe="official", weighting="parameter",
                 iterations=1).options["weighting"] == "parameter"  # explicit options win
    with pytest.raises(ValueError, match="val_data"):
        align(a, a, "learned_matching", data=data, recipe="official", epochs=1)
    kept_last = align(a, a, "learned_matching", data=data, recipe="official", epochs=1, val_data=False)
    assert "best_step" not in kept_last.history and kept_last.options["optimizer"] == "adamw"
    assert kept_last.options["val_data"] is False and kept_last.options["token_rows"] is None
    with pytest.raises(ValueError, match="unknown recipe"):
        align(a, a, recipe="paper")
    with pytest.raises(ValueError, match="weighting must be one of"):
        align(a, a, weighting="per_block")
    with pytest.raises(ValueError, match="multi-model"):
        align_many([a, a], "weight_matching", recipe="official")
    with pytest.raises(ValueError, match="warmup_cosine"):
        learn([canonicalize(a)] * 2, [None, LatentSymmetry(align(a, a).symmetry, 2, 32, 4, 64)],
              iter(data), epochs=1, lr=1e-3, schedule="warmup_cosine", progress=False)
