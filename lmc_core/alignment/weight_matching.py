"""Weight matching (SPEC section 4): data-free, iterated, on the canonical form.

Each iteration
1. fits the residual map O by orthogonal Procrustes (or, in the paper's ablation, by a LAP
   over permutations): for every residual axis of every canonical parameter we stack the
   vectors along that axis — B's with every *other* residual axis already mapped by the
   previous O and its heads and units already permuted — scale each block by 1/sqrt(its number
   of vectors), and take O = U Vᵀ from the SVD of R_Bᵀ R_A. The first iteration uses only the
   parameters outside the blocks (embeddings, head, final norm); later ones use all of them;
2. permutes heads per layer by a LAP on C_ij = ‖QK_i^A − QK_j^B‖² + ‖OV_i^A − OV_j^B‖²;
3. permutes MLP units per layer by a LAP on the similarity of [input weights, bias, output
   weights] (the Git Re-Basin objective), given O.

Which axes are residual, and how each transforms, comes from `canonical.PARAM_AXES` alone.

The authors' released code (../shared/OFFICIAL-CODE.md) differs in three ways that change the
solution, each available here as an option (`weighting`, `head_cost`, `unit_cost`), plus the
token-row filter its pipeline can apply (`token_rows`):

- ``weighting="layer"``: the Procrustes sees only weight matrices — embeddings and head, then
  from iteration 2 per layer the query side of QK, the output side of OV and both MLP matrices —
  and each layer's matrix is scaled by 1/sqrt(its number of vectors), so every layer block
  weighs as much as the token table (ours: one block per parameter over all layers, biases and
  norm offsets included).
- ``head_cost="frobenius"``: C_ij = sqrt((d+1)/d_head) ‖QK_i^A − QK_j^B‖ + ‖OV_i^A − OV_j^B‖,
  distances not squared.
- ``unit_cost="normalized_l1"``: the L1 distance between the L2-normalised [input weights, bias,
  output weights] of two units, instead of their inner product.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..canonical import PARAM_AXES, CanonicalTransformer
from ..symmetry import Symmetry, UnitMap, _contract
from .solvers import assignment, fix_ones, one_hot_rows, permutation_procrustes, procrustes

RESIDUAL_ROLES = ("res", "res_read", "res_aug", "offset")
WEIGHTINGS = ("parameter", "layer")
HEAD_COSTS = ("squared", "frobenius")
UNIT_COSTS = ("inner", "normalized_l1")
# weighting="layer": (parameter, residual axis) pairs the authors' Procrustes reads. Outside the
# blocks: the embedding matrices and the head; per layer: the query side of QK (axis 2: x̃ QK x̃ᵀ
# contracts the query with axis 2), the output side of OV and the two MLP matrices. The authors
# have no ViT: for it we add the patch and position tables, not the single class-token vector.
LAYER_OUTSIDE = {"token_embed": 1, "pos_embed": 1, "patch_embed": 1, "head": 0}
LAYER_BLOCKS = {"qk": 2, "ov": 3, "mlp_in": 1, "mlp_out": 2}


def _residual_matrix(role: str, O: Tensor) -> Tensor:
    if role != "res_aug":
        return O  # square maps: c = 1, so writers, readers and offsets all contract with O
    n, m = O.shape
    aug = torch.zeros(n + 1, m + 1, dtype=O.dtype, device=O.device)
    aug[:n, :m] = O
    aug[n, m] = 1.0
    return aug


def _vectors(value: Tensor, axis: int, role: str, width: int) -> Tensor:
    """The vectors along residual axis `axis` of a parameter, as rows of an (n, width) matrix."""
    moved = value.movedim(axis, -1)
    if role == "res_aug":
        moved = moved[..., :width]  # the bias slot of x̃ = [x, 1] is not moved by O
    return moved.reshape(-1, width)


def residual_cross(params_a: dict[str, Tensor], params_b: dict[str, Tensor], O_prev: Tensor,
                   names: list[str], *, weighting: str = "parameter",
                   token_rows: Tensor | None = None) -> Tensor:
    """C = R_Bᵀ R_A (d_B x d_A) over the residual axes of the named parameters: every residual
    axis, one block per parameter ("parameter"), or the authors' matrices one block per layer
    ("layer", see the module docstring). `token_rows`: only these rows of the token table."""
    width_a, width_b = O_prev.shape[1], O_prev.shape[0]
    cross = torch.zeros(width_b, width_a, dtype=torch.float64, device=O_prev.device)
    for name in names:
        roles = PARAM_AXES[name]
        axes = [i for i, r in enumerate(roles) if r in RESIDUAL_ROLES]
        if weighting == "layer":
            axis = LAYER_OUTSIDE.get(name, LAYER_BLOCKS.get(name))
            axes = [] if axis is None else [axis]
        for axis in axes:
            role = roles[axis]
            a, b = params_a[name], params_b[name]
            if name == "token_embed" and token_rows is not None:
                a, b = a[token_rows], b[token_rows]
            for other, other_role in enumerate(roles):
                if other != axis and other_role in RESIDUAL_ROLES:
                    b = _contract(b, other, _residual_matrix(other_role, O_prev.to(b.dtype)))
            # one block per layer: the layer axis (0) leads, the residual axis moves past it
            blocks = zip(a, b, strict=True) if weighting == "layer" and roles[0] == "layer" else [(a, b)]
            shift = 1 if weighting == "layer" and roles[0] == "layer" else 0
            for block_a, block_b in blocks:
                vb = _vectors(block_b, axis - shift, role, width_b).double()
                va = _vectors(block_a, axis - shift, role, width_a).double()
                cross += vb.T @ va / vb.shape[0] ** 0.5 / va.shape[0] ** 0.5
    return cross


def head_similarity(params_a: dict[str, Tensor], params_b: dict[str, Tensor], cost: str = "squared") -> Tensor:
    """−C per layer, (L, H, H): "squared", C_ij = ‖QK_i^A − QK_j^B‖² + ‖OV_i^A − OV_j^B‖²;
    "frobenius" (the authors'), C_ij = sqrt((d+1)/d_head) ‖QK_i^A − QK_j^B‖ + ‖OV_i^A − OV_j^B‖."""
    _, num_heads, augmented, _ = params_a["qk"].shape  # (L, H, d+1, d+1)
    qk_scale = (augmented / ((augmented - 1) / num_heads)) ** 0.5  # sqrt((d+1) / d_head)
    sim = 0
    for name in ("qk", "ov"):
        a, b = params_a[name].flatten(2).double(), params_b[name].flatten(2).double()
        squared = (a * a).sum(-1, keepdim=True) + (b * b).sum(-1).unsqueeze(1) - 2 * a @ b.transpose(1, 2)
        if cost == "squared":
            sim = sim - squared
        else:
            sim = sim - (qk_scale if name == "qk" else 1.0) * squared.clamp_min(0).sqrt()
    return sim


def unit_similarity(params_a: dict[str, Tensor], params_b: dict[str, Tensor], cost: str = "inner") -> Tensor:
    """Similarity of the units' [input weights, bias, output weights], per layer (L, m, m): their
    inner product ("inner", Git Re-Basin), or minus the L1 distance of the L2-normalised vectors
    ("normalized_l1", the authors')."""
    def vectors(p: dict[str, Tensor]) -> Tensor:
        return torch.cat([p["mlp_in"].transpose(1, 2), p["mlp_in_bias"].unsqueeze(-1), p["mlp_out"]], -1).double()
    va, vb = vectors(params_a), vectors(params_b)
    if cost == "inner":
        return va @ vb.transpose(1, 2)
    va, vb = F.normalize(va, dim=-1), F.normalize(vb, dim=-1)
    return -torch.cdist(va, vb, p=1)


def weight_distance(params_a: dict[str, Tensor], params_b: dict[str, Tensor]) -> float:
    """‖θ_A − θ_B‖ / ‖θ_A‖ over all canonical parameters: the weight-matching objective."""
    num = sum(((params_a[k].double() - params_b[k].double()) ** 2).sum() for k in params_a)
    den = sum((params_a[k].double() ** 2).sum() for k in params_a)
    return float((num / den).sqrt())


def weight_matching(model_a: CanonicalTransformer, model_b: CanonicalTransformer, *, iterations: int = 15,
                    residual: str = "orthogonal", on_iteration: Callable[[int, Symmetry], dict] | None = None,
                    keep_centred: bool = False, weighting: str = "parameter", head_cost: str = "squared",
                    unit_cost: str = "inner", token_rows: Tensor | None = None) -> tuple[Symmetry, dict[str, list]]:
    """Align B to A without data. Returns the Symmetry (apply it to B) and a history with the
    relative weight distance after every iteration, plus whatever `on_iteration` returns
    (the barrier, when the caller has data). Iteration 0 is the start: the identity, i.e. the
    canonical forms with nothing aligned (the control that separates the change of space from
    the alignment). `weighting`, `head_cost`, `unit_cost` and `token_rows` choose between our
    objective and the authors' (module docstring)."""
    if residual not in ("orthogonal", "permutation"):
        raise ValueError(f"residual must be 'orthogonal' or 'permutation', got {residual!r}")
    for option, value, valid in (("weighting", weighting, WEIGHTINGS), ("head_cost", head_cost, HEAD_COSTS),
                                 ("unit_cost", unit_cost, UNIT_COSTS)):
        if value not in valid:
            raise ValueError(f"{option} must be one of {', '.join(valid)}; got {value!r}")
    pa = {k: v.detach() for k, v in model_a.params().items()}
    pb = {k: v.detach() for k, v in model_b.params().items()}
    cfg = model_b.config
    L, H, m, d = cfg.depth, cfg.num_heads, cfg.mlp_width, cfg.width
    dtype, device = pa["qk"].dtype, pa["qk"].device
    eye = torch.eye(d, dtype=dtype, device=device)
    heads = one_hot_rows(torch.arange(H, device=device).expand(L, H), H, dtype)
    units = one_hot_rows(torch.arange(m, device=device).expand(L, m), m, dtype)
    O = eye
    outside_blocks = [n for n in pa if "layer" not in PARAM_AXES[n]]
    solve = procrustes if residual == "orthogonal" else permutation_procrustes
    if keep_centred and residual == "orthogonal":  # O fixes 1: exportable to LayerNorm models
        solve = functools.partial(fix_ones, procrustes)
    history: dict[str, list] = {"iteration": [], "weight_distance": []}
    sym = Symmetry()  # zero iterations: the identity

    def record(it: int) -> None:
        history["iteration"].append(it)
        history["weight_distance"].append(weight_distance(pa, sym.apply_params(pb, cfg)[0]))
        if on_iteration is not None:
            for key, value in on_iteration(it, sym).items():
                history.setdefault(key, []).append(value)

    record(0)
    for it in range(iterations):
        unit_sym = Symmetry(None, UnitMap(heads, heads), UnitMap(units, units))
        pb_units, _ = unit_sym.apply_params(pb, cfg)
        names = outside_blocks if it == 0 else list(pa)
        O = solve(residual_cross(pa, pb_units, O, names, weighting=weighting, token_rows=token_rows)).to(dtype)
        pb_res, _ = Symmetry(residual=O).apply_params(pb, cfg)
        heads = one_hot_rows(assignment(head_similarity(pa, pb_res, head_cost)), H, dtype)
        units = one_hot_rows(assignment(unit_similarity(pa, pb_res, unit_cost)), m, dtype)
        sym = Symmetry(O, UnitMap(heads, heads), UnitMap(units, units))
        record(it + 1)
    return sym, history
