"""Width-heterogeneous alignment: lift a narrower model into a wider model's shape, exactly.

Residual stream N -> M: a random semi-orthogonal O (N x M, O Oᵀ = I_N) with the c = sqrt(N/M)
and eps scaling of SPEC section 3; the lifted model computes the narrow model's function.
Our extension: fewer heads or MLP units -> semi-permutations. Each original is copied to
ceil or floor(M/N) slots, round robin, with equal copy weights summing to 1; heads share QK and
split OV, MLP units share their input weights and split their output weights. Both are exact
for every activation. Weight matching then permutes the slots, so the copies land where the
wider model's units fit them best.

Interpolation evaluates both ends with one config (model A's), so the lifted model must also
share A's RMSNorm eps and softmax scales, which the maps alone do not give (`target=`):
- eps: the lift writes eps -> (N/M)·eps. Scaling the residual stream by
  s = sqrt(eps_A / eps_lifted) gives RMSNorm(s·y; eps_A) = RMSNorm(y; eps_lifted)
  (`Symmetry.eps`).
- softmax scale 1/sqrt(head_dim): a narrower model with as many heads has smaller heads, so a
  larger scale. Scores are x̃ QK x̃ᵀ · scale, so QK -> QK · scale_B / scale_A keeps every score.
"""

from __future__ import annotations

import torch

from ..canonical import CanonicalConfig, CanonicalTransformer
from ..symmetry import Orthogonal, SemiPermutation, Symmetry


def _round_robin(depth: int, n: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    source = torch.arange(m) % n
    counts = torch.bincount(source, minlength=n).to(torch.float64)
    weight = 1.0 / counts[source]
    return source.expand(depth, m).clone(), weight.expand(depth, m).clone()


def lift_width(model: CanonicalTransformer, width: int | None = None, num_heads: int | None = None,
               mlp_width: int | None = None, *, target: CanonicalConfig | None = None, seed: int = 0) -> Symmetry:
    """The Symmetry that lifts `model` to residual width `width` (and, optionally, to more heads
    and MLP units). Apply it to get a wider model with exactly the same function. With `target`
    (the wider model's config), its width, heads, MLP units, eps and softmax scales are all taken
    from there, so the lifted model can be interpolated with the wider one."""
    cfg = model.config
    if target is not None:
        width, num_heads, mlp_width = target.width, target.num_heads, target.mlp_width
    if width is None:
        raise ValueError("lift_width needs the width to lift to (width=...) or the wider model's config (target=...)")
    num_heads = num_heads or cfg.num_heads
    mlp_width = mlp_width or cfg.mlp_width
    for what, small, large in (("residual width", cfg.width, width), ("heads", cfg.num_heads, num_heads),
                               ("MLP width", cfg.mlp_width, mlp_width)):
        if large < small:
            raise ValueError(f"cannot lift {what} {small} down to {large}: pass the wider model as model_a")
    dtype = model.params()["qk"].dtype
    device = model.params()["qk"].device
    generator = torch.Generator().manual_seed(seed)
    residual = None
    if width > cfg.width:
        residual = Orthogonal.random(cfg.width, width, generator=generator, dtype=dtype).matrix.to(device)
    semi = SemiPermutation(
        heads=_round_robin(cfg.depth, cfg.num_heads, num_heads) if num_heads > cfg.num_heads else None,
        mlp=_round_robin(cfg.depth, cfg.mlp_width, mlp_width) if mlp_width > cfg.mlp_width else None,
    ).to_symmetry(cfg)
    eps = attn_scales = None
    if target is not None:
        if cfg.eps * cfg.width / width != target.eps:
            eps = target.eps
        if tuple(cfg.attn_scales) != tuple(target.attn_scales):
            attn_scales = tuple(target.attn_scales)
    return Symmetry(residual, semi.heads, semi.mlp, eps=eps, attn_scales=attn_scales).to(device=device)


def needs_lift(symmetry: Symmetry) -> bool:
    """Whether a `lift_width` result changes anything (else the model is already A's shape)."""
    return any(part is not None for part in (symmetry.residual, symmetry.heads, symmetry.mlp, symmetry.eps,
                                             symmetry.attn_scales))
