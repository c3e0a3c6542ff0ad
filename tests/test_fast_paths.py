"""The faster code paths of the canonical forward and of learned matching compute what the plain
ones do: logits without the last position, bf16 autocast on CPU with explicit attention, and a
bf16 learned-matching objective (align(..., autocast=True))."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_align import _gpt2, _markov_batch, _vit

from lmc_core import align, barrier, canonicalize
from lmc_core.alignment.learned import LatentSymmetry, _interpolated_loss
from lmc_core.canonical import canonical_forward
from lmc_core.symmetry import Symmetry


def test_logits_without_the_last_position_are_the_rest() -> None:
    model = canonicalize(_gpt2())
    x = _markov_batch(torch.Generator().manual_seed(0))
    full = canonical_forward(model.params(), model.config, x)
    short = canonical_forward(model.params(), model.config, x, last_position=False)
    assert short.shape == (full.shape[0], full.shape[1] - 1, full.shape[2])
    assert (short - full[:, :-1]).abs().max() < 1e-5


@pytest.mark.parametrize("kind", ["gpt2", "vit"])
def test_bf16_autocast_on_cpu_attends_explicitly_and_agrees(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under CPU autocast the attention is softmax(QKᵀ)V written out (torch's CPU flash kernel
    is slow in bf16); the logits stay within bf16's rounding of the float32 ones."""
    model = canonicalize(_gpt2() if kind == "gpt2" else _vit())
    c = model.config
    x = _markov_batch(torch.Generator().manual_seed(0)) if kind == "gpt2" else \
        torch.randn(4, c.in_chans, c.img_size, c.img_size, generator=torch.Generator().manual_seed(0))
    exact = canonical_forward(model.params(), model.config, x)
    calls = []
    monkeypatch.setattr(F, "scaled_dot_product_attention",
                        lambda *args, real=F.scaled_dot_product_attention, **kw: calls.append(1) or real(*args, **kw))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = canonical_forward(model.params(), model.config, x).float()
    assert not calls
    assert (fast - exact).abs().max() < 0.05 * exact.abs().max()
    canonical_forward(model.params(), model.config, x)
    assert calls  # float32 keeps torch's kernel


def test_learned_matching_objective_in_bf16_follows_the_float32_one() -> None:
    """Same loss to bf16 rounding, gradients pointing the same way, and an alignment whose barrier
    ends within 0.002 nats of the float32 run's. From the identity (no weight-matching start) one
    epoch leaves a barrier of about 0.01 on held-out data, far below the unaligned pair's 0.12, so
    both numbers mean something: a bf16 run that did not learn, or learned otherwise, fails."""
    a, b = canonicalize(_gpt2(seed=10)), canonicalize(_gpt2(seed=11))
    g = torch.Generator().manual_seed(12)
    train = [(_markov_batch(g), None) for _ in range(8)]
    params = [{k: v.detach() for k, v in m.params().items()} for m in (a, b)]
    grads = []
    for autocast in (False, True):
        latent = LatentSymmetry(Symmetry(), a.depth, a.width, a.num_heads, a.mlp_width)
        loss = _interpolated_loss(params, [None, latent], a.config, [0.5, 0.5], *train[0], autocast=autocast)
        loss.backward()
        grads.append((loss.item(), latent.z_residual.grad.flatten()))
    (loss32, grad32), (loss16, grad16) = grads
    assert abs(loss32 - loss16) < 0.01 * loss32
    assert F.cosine_similarity(grad32, grad16, dim=0) > 0.99
    runs = [align(a, b, "learned_matching", data=train, epochs=1, lr=1e-2, init="identity", autocast=autocast)
            for autocast in (False, True)]
    assert runs[1].options["autocast"] is True
    held_out = [(_markov_batch(torch.Generator().manual_seed(99), n=64), None)]
    unaligned = barrier(a, b, held_out).loss_barrier
    barriers = [barrier(r.model_a, r.model_b, held_out).loss_barrier for r in runs]
    assert min(barriers) > 0.005 and max(barriers) < unaligned / 4  # a barrier remains, and LM lowered it
    assert abs(barriers[0] - barriers[1]) < 0.002
