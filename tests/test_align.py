"""Alignment: planted symmetries are recovered exactly, learned matching beats weight matching
on independently trained models, and bad input gets a clear error."""

from __future__ import annotations

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer
from transformers import GPT2Config, GPT2LMHeadModel

from lmc_core import (
    CanonicalTransformer,
    Orthogonal,
    Permutation,
    Symmetry,
    align,
    align_many,
    barrier,
    canonicalize,
    simplex_barrier,
)
from lmc_core.alignment.learned import LatentSymmetry
from lmc_core.alignment.solvers import marginal_error, polar, sinkhorn, straight_through_permutation

VOCAB = 48


def _briefly_trained(model: torch.nn.Module, make_batch, steps: int = 15, seed: int = 0) -> torch.nn.Module:
    """A few AdamW steps, so the weights carry no accidental symmetry from initialisation."""
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        inputs, targets = make_batch()
        logits = model(inputs).logits if isinstance(model, GPT2LMHeadModel) else model(inputs)
        if targets is None:
            logits, targets = logits[:, :-1], inputs[:, 1:]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _markov_batch(g: torch.Generator, n: int = 16, length: int = 16) -> torch.Tensor:
    """A learnable toy language: x_t = 3 x_{t-1} + x_{t-2} (mod V), 10% noise."""
    x = torch.zeros(n, length, dtype=torch.long)
    x[:, :2] = torch.randint(0, VOCAB, (n, 2), generator=g)
    for t in range(2, length):
        x[:, t] = (3 * x[:, t - 1] + x[:, t - 2]) % VOCAB
    noise = torch.rand(n, length, generator=g) < 0.1
    x[noise] = torch.randint(0, VOCAB, (int(noise.sum()),), generator=g)
    return x


def _quadrant_batch(g: torch.Generator, n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """A learnable toy vision task: the label is the brightest of 4 quadrants (5: none)."""
    labels = torch.randint(0, 5, (n,), generator=g)
    images = 0.3 * torch.randn(n, 1, 16, 16, generator=g)
    for i, label in enumerate(labels.tolist()):
        if label < 4:
            r, c = divmod(label, 2)
            images[i, :, 8 * r:8 * r + 8, 8 * c:8 * c + 8] += 1.0
    return images, labels


def _gpt2(width: int = 32, seed: int = 0, layers: int = 2, heads: int = 4, inner: int = 64,
          steps: int = 60) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=16, n_embd=width, n_layer=layers, n_head=heads, n_inner=inner,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    g = torch.Generator().manual_seed(seed)
    return _briefly_trained(GPT2LMHeadModel(cfg), lambda: (_markov_batch(g), None), steps=steps, seed=seed)


def _vit(seed: int = 0, steps: int = 60) -> VisionTransformer:
    torch.manual_seed(seed)
    model = VisionTransformer(img_size=16, patch_size=4, in_chans=1, num_classes=5, embed_dim=32, depth=2,
                              num_heads=4, mlp_ratio=2.0)
    g = torch.Generator().manual_seed(seed)
    return _briefly_trained(model, lambda: _quadrant_batch(g), steps=steps, seed=seed)


def _data(kind: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    g = torch.Generator().manual_seed(123)
    if kind == "gpt2":
        return _markov_batch(g, n=32), None
    return _quadrant_batch(g, n=64)


def _planted(model: CanonicalTransformer, seed: int, orthogonal: bool = True) -> Symmetry:
    g = torch.Generator().manual_seed(seed)
    sym = Permutation.random(model.config, g).to_symmetry()
    if orthogonal:
        sym = sym.then(Orthogonal.random(model.width, generator=g, dtype=torch.float32).to_symmetry())
    return sym


def _max_param_gap(a: CanonicalTransformer, b: CanonicalTransformer) -> float:
    return max(float((a.params()[k] - b.params()[k]).detach().abs().max()) for k in a.params())


@pytest.mark.parametrize("kind", ["gpt2", "vit"])
@pytest.mark.parametrize("seed", [1, 2])
def test_weight_matching_recovers_planted_symmetry(kind: str, seed: int) -> None:
    a = canonicalize(_gpt2() if kind == "gpt2" else _vit())
    planted = _planted(a, seed)
    b = planted.apply(a)
    data = _data(kind)
    assert barrier(a, b, data).loss_barrier > 1e-2, "the planted copy should sit across a barrier"

    found = align(a, b, "weight_matching", iterations=3)
    eye_heads = torch.eye(a.num_heads, dtype=torch.float64).expand(a.depth, -1, -1)
    eye_units = torch.eye(a.mlp_width, dtype=torch.float64).expand(a.depth, -1, -1)
    roundtrip = planted.then(found.symmetry)
    assert torch.equal(roundtrip.heads.read.double(), eye_heads)  # every head permutation exactly
    assert torch.equal(roundtrip.mlp.read.double(), eye_units)  # every MLP permutation exactly
    residual_error = (roundtrip.residual.double() - torch.eye(a.width, dtype=torch.float64)).abs().max()
    assert residual_error < 1e-4
    assert _max_param_gap(a, found.model_b) < 1e-4
    assert barrier(a, found.model_b, data).loss_barrier <= 1e-5


def test_weight_matching_aligns_a_width_lifted_narrow_model() -> None:
    narrow = canonicalize(_gpt2(width=16, seed=3))
    g = torch.Generator().manual_seed(4)
    wide = Orthogonal.random(16, 32, generator=g, dtype=torch.float32).apply(narrow)
    wide = _planted(wide, 5).apply(wide)  # and scrambled: heads, units, residual basis
    data = _data("gpt2")
    found = align(wide, narrow, "weight_matching", iterations=5)
    assert found.model_b.width == 32
    # The aligned narrow model still computes its own function, and sits on the wide one. float32:
    # the lift and the solved orthogonal map each round (1.6e-5 on logits of about 1 under torch's
    # generic kernels on an Intel Xeon); a wrong map would be off by the logits' own size.
    logits_gap = (found.model_b(data[0]) - narrow(data[0])).abs().max()
    assert logits_gap < 3e-5
    assert barrier(wide, found.model_b, data).loss_barrier <= 1e-5


@pytest.mark.parametrize("method", ["weight_matching", "learned_matching"])
def test_align_lifts_an_independent_narrow_model_with_the_wide_eps_and_scales(method: str) -> None:
    # Independently trained: the narrow model's heads are smaller (a larger softmax scale) and the
    # lift alone would leave eps·N/M, so both must be reparametrised to share the wide config.
    wide, narrow = canonicalize(_gpt2(width=32, seed=8)), canonicalize(_gpt2(width=16, seed=9))
    assert wide.config.attn_scales != narrow.config.attn_scales
    data = _data("gpt2")
    found = align(wide, narrow, method, data=[data], iterations=3, epochs=1, steps_per_epoch=3)
    assert found.model_b.config == wide.config  # width, eps and softmax scales all the wide model's
    assert (found.model_b(data[0]) - narrow(data[0])).abs().max() < 1e-5  # still the narrow function
    assert _max_param_gap(found.symmetry.apply(narrow), found.model_b) < 1e-6  # the symmetry says it all
    result = barrier(wide, found.model_b, data)
    own = barrier(narrow, narrow, data).losses[0]
    assert abs(result.losses[0] - own) < 1e-5  # λ = 0 is model B, evaluated in the wide config


def test_activation_matching_recovers_planted_permutations() -> None:
    a = canonicalize(_gpt2(seed=6))
    planted = Permutation.random(a.config, torch.Generator().manual_seed(7))
    b = planted.apply(a)
    found = align(a, b, "activation_matching", data=_data("gpt2"), samples=16)
    roundtrip = planted.to_symmetry().then(found.symmetry)
    assert torch.equal(roundtrip.mlp.read.double(), torch.eye(a.mlp_width, dtype=torch.float64).expand(a.depth, -1, -1))
    assert torch.equal(roundtrip.heads.read.double(), torch.eye(a.num_heads, dtype=torch.float64).expand(a.depth, -1, -1))
    assert found.symmetry.residual is None  # the baseline keeps the residual basis


def test_universe_matching_of_planted_copies_has_zero_simplex_barrier() -> None:
    a = canonicalize(_vit(seed=8))
    models = [a, _planted(a, 9).apply(a), _planted(a, 10).apply(a)]
    data = _data("vit")
    assert simplex_barrier(models, data, resolution=3).loss_barrier > 1e-2
    found = align_many(models, "weight_matching", iterations=3, universe_iterations=2)
    result = simplex_barrier(found.models, data, resolution=3)
    centre = result.weights.index([1 / 3, 1 / 3, 1 / 3]) if [1 / 3] * 3 in result.weights else None
    assert result.loss_barrier <= 1e-5
    if centre is not None:
        assert abs(result.deviation[centre]) <= 1e-5


def test_learned_matching_beats_weight_matching_on_independent_models() -> None:
    def trained(seed: int) -> GPT2LMHeadModel:
        torch.manual_seed(seed)
        cfg = GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=48, n_layer=2, n_head=4, n_inner=96,
                         resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        g = torch.Generator().manual_seed(seed)
        return _briefly_trained(GPT2LMHeadModel(cfg), lambda: (_markov_batch(g, 32, 32), None), steps=300, seed=seed)

    a, b = trained(0), trained(1)
    g = torch.Generator().manual_seed(99)
    train = [(_markov_batch(g, 32, 32), None) for _ in range(20)]
    test = [(_markov_batch(g, 64, 32), None)]
    vanilla = barrier(a, b, test).loss_barrier
    wm = align(a, b, "weight_matching", iterations=5)
    lm = align(a, b, "learned_matching", data=train, iterations=5, epochs=2, lr=1e-2, eval_data=test)
    wm_barrier = barrier(wm.model_a, wm.model_b, test).loss_barrier
    lm_barrier = barrier(lm.model_a, lm.model_b, test).loss_barrier
    assert vanilla > wm_barrier > lm_barrier
    assert lm_barrier < 0.5 * wm_barrier
    # Learned matching moves only along symmetries: B keeps its function exactly.
    assert (lm.model_b(test[0][0]) - canonicalize(b)(test[0][0])).abs().max() < 1e-4
    assert lm.history["epoch"] == [0, 1, 2] and len(lm.history["train_barrier"]) == 3
    assert lm.history["test_barrier"][-1] == pytest.approx(lm_barrier, abs=1e-6)  # the same test data
    # Weight matching's history starts at iteration 0, the identity: the canonical-space control.
    traced = align(a, b, "weight_matching", iterations=5, eval_data=test)
    assert traced.history["iteration"] == [0, 1, 2, 3, 4, 5]
    unaligned = barrier(canonicalize(a), canonicalize(b), test).loss_barrier
    assert traced.history["loss_barrier"][0] == pytest.approx(unaligned, abs=1e-6)
    assert traced.history["loss_barrier"][-1] == pytest.approx(wm_barrier, abs=1e-6)
    assert traced.history["weight_distance"][0] > traced.history["weight_distance"][-1]


def test_permutation_latents_move_at_their_own_rate() -> None:
    a, b = canonicalize(_gpt2(seed=10)), canonicalize(_gpt2(seed=11))
    g = torch.Generator().manual_seed(12)
    train = [(_markov_batch(g), None) for _ in range(12)]
    opts = {"iterations": 3, "residual": "permutation", "epochs": 1}
    start = align(a, b, "weight_matching", **opts).symmetry
    parts = lambda s: (s.residual, s.heads.read, s.mlp.read)  # noqa: E731
    slow = align(a, b, "learned_matching", data=train, **opts).symmetry  # perm_lr = lr = 1e-3
    assert all(torch.equal(x, y) for x, y in zip(parts(slow), parts(start), strict=True))
    fast = align(a, b, "learned_matching", data=train, perm_lr=0.3, **opts).symmetry
    assert not all(torch.equal(x, y) for x, y in zip(parts(fast), parts(start), strict=True))
    latent = LatentSymmetry(start, a.depth, a.width, a.num_heads, a.mlp_width, residual="permutation")
    assert [(len(g["params"]), g["lr"]) for g in latent.param_groups(1e-3, 0.1)] == [(3, 0.1)]
    latent = LatentSymmetry(start, a.depth, a.width, a.num_heads, a.mlp_width, relaxation="soft")
    assert [(len(g["params"]), g["lr"]) for g in latent.param_groups(1e-3, 0.1)] == [(3, 1e-3)]


def test_polar_gradient_is_exact_and_finite_at_orthogonal_matrices() -> None:
    z = torch.randn(5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(polar, (z,))
    q = Orthogonal.random(6, generator=torch.Generator().manual_seed(0)).matrix.clone().requires_grad_(True)
    (polar(q) * torch.randn(6, 6, dtype=torch.float64)).sum().backward()
    assert torch.isfinite(q.grad).all()


def test_straight_through_and_sinkhorn() -> None:
    z = torch.randn(3, 5, 5, requires_grad=True)
    p = straight_through_permutation(z)
    assert torch.equal(p.detach().sum(-1), torch.ones(3, 5)) and torch.equal(p.detach().sum(-2), torch.ones(3, 5))
    weights = torch.randn(3, 5, 5)
    (p * weights).sum().backward()
    assert torch.equal(z.grad, weights)  # identity backward into the latents
    s = sinkhorn(torch.randn(4, 4), tau=0.5, iterations=50)
    assert torch.allclose(s.sum(-1), torch.ones(4), atol=1e-4) and torch.allclose(s.sum(-2), torch.ones(4), atol=1e-4)
    # To a tolerance: a sharp temperature needs many rounds; stopping early leaves the marginals at tol.
    z = torch.randn(2, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    few, converged = sinkhorn(z, tau=0.25, iterations=2), sinkhorn(z, tau=0.25, iterations=10_000, tol=1e-9)
    assert marginal_error(few) > 1e-2 and marginal_error(converged) <= 1e-9
    assert 1e-4 < marginal_error(sinkhorn(z, tau=0.05, iterations=100)) < 1  # sharper: slower
    assert marginal_error(torch.eye(5)) == 0.0


def test_clear_errors() -> None:
    a = _gpt2(steps=0)
    with pytest.raises(ValueError, match="depth"):
        align(a, _gpt2(layers=3, steps=0))
    other_vocab = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB + 1, n_positions=16, n_embd=32, n_layer=2, n_head=4,
                                             n_inner=64)).eval()
    with pytest.raises(ValueError, match="num_outputs"):
        align(a, other_vocab)
    with pytest.raises(ValueError, match="unknown option.*valid"):
        align(a, a, "weight_matching", iterashuns=3)
    with pytest.raises(ValueError, match="unknown alignment method"):
        align(a, a, "telepathy")
    with pytest.raises(ValueError, match="wider model as model_a"):
        align(_gpt2(width=16, steps=0), a)
    with pytest.raises(ValueError, match="needs training data"):
        align(a, a, "learned_matching")
    with pytest.raises(ValueError, match="lambda_sampler"):
        align(a, a, "learned_matching", data=[_data("gpt2")], lambda_sampler="beta")
    with pytest.raises(ValueError, match="task"):
        align(a, _vit(steps=0))
