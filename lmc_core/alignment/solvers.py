"""The small solvers alignment is built from: assignment, Procrustes, polar factor, Sinkhorn.

LAPs run in scipy on the CPU (faster than GPU solvers at these sizes: at most a few thousand
units); everything else stays on the tensors' device.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor


def assignment(similarity: Tensor) -> Tensor:
    """For a (..., N, N) similarity (rows: reference units, columns: units of the model being
    aligned), the index tensor `idx` (..., N) maximising Σ_i sim[i, idx[i]]: slot i of the
    aligned model takes unit idx[i]. Batched over leading axes with one host transfer."""
    sims = similarity.detach().to("cpu", torch.float64)
    flat = sims.reshape(-1, *sims.shape[-2:]).numpy()
    if not np.isfinite(flat).all():
        raise ValueError("assignment: the similarity matrix contains NaN or inf (are the weights finite?)")
    cols = [linear_sum_assignment(s, maximize=True)[1] for s in flat]
    return torch.as_tensor(np.stack(cols), device=similarity.device).reshape(sims.shape[:-1])


def one_hot_rows(idx: Tensor, n: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """(..., N) indices -> (..., N, n) matrices with row i one-hot at idx[i]."""
    return torch.nn.functional.one_hot(idx, n).to(dtype)


def procrustes(cross: Tensor) -> Tensor:
    """argmax over orthogonal O of tr(Oᵀ C) for C = R_Bᵀ R_A: O = U Vᵀ from the SVD of C."""
    u, _, vh = torch.linalg.svd(cross.double(), full_matrices=False)
    return (u @ vh).to(cross.dtype)


def permutation_procrustes(cross: Tensor) -> Tensor:
    """The permutation-only ablation of `procrustes`: the permutation matrix maximising tr(Pᵀ C)."""
    idx = assignment(cross.T)  # row j of the reference takes channel idx[j] of B
    return one_hot_rows(idx, cross.shape[0], cross.dtype).T


class _Polar(torch.autograd.Function):
    """Orthogonal polar factor O = U Vᵀ of a square Z = U S Vᵀ, with the exact derivative
    dO = U X Vᵀ, X_ij = (Ω_ij − Ω_ji) / (s_i + s_j), Ω = Uᵀ dZ V. Autograd's SVD backward
    divides by s_i² − s_j², which is infinite at an orthogonal Z (all s = 1), i.e. exactly
    where learned matching starts from weight matching; s_i + s_j never vanishes."""

    @staticmethod
    def forward(ctx, z: Tensor) -> Tensor:
        u, s, vh = torch.linalg.svd(z)
        ctx.save_for_backward(u, s, vh)
        return u @ vh

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        u, s, vh = ctx.saved_tensors
        m = u.transpose(-2, -1) @ grad @ vh.transpose(-2, -1)
        k = (m - m.transpose(-2, -1)) / (s.unsqueeze(-1) + s.unsqueeze(-2)).clamp_min(1e-12)
        return u @ k @ vh


def polar(z: Tensor) -> Tensor:
    """Differentiable projection of a square matrix onto the orthogonal group (see `_Polar`)."""
    if z.shape[-1] != z.shape[-2]:
        raise ValueError(f"polar needs a square matrix, got {tuple(z.shape)}")
    return _Polar.apply(z)


def fix_ones(project: Callable[[Tensor], Tensor], z: Tensor) -> Tensor:
    """`project` (procrustes or polar) restricted to the orthogonal maps that fix the all-ones
    direction (1 O = 1): O = u uᵀ + Q project(Qᵀ z Q) Qᵀ, u = 1/√d, Q an orthonormal basis of
    u's complement. Such maps keep a centred residual stream centred, which a LayerNorm model
    needs (`lmc_core.export`); over them tr(Oᵀ z) = uᵀ z u + tr(Rᵀ Qᵀ z Q), so this is the exact
    optimum (and the polar factor's gradient flows through Qᵀ z Q)."""
    d = z.shape[-1]
    spanning = torch.eye(d, dtype=torch.float64, device=z.device)
    spanning[:, 0] = 1.0
    q = torch.linalg.qr(spanning)[0][:, 1:].to(z.dtype)  # QR keeps span(1) in column 0: the rest spans 1's complement
    u = torch.full((d, 1), d**-0.5, dtype=z.dtype, device=z.device)
    return u @ u.T + q @ project(q.T @ z @ q) @ q.T


def straight_through_permutation(z: Tensor) -> Tensor:
    """Hungarian projection of latent scores z (..., N, N) with a straight-through estimator:
    the forward value is the hard permutation matrix, the backward pass is the identity into z."""
    hard = one_hot_rows(assignment(z), z.shape[-1], z.dtype)
    return hard + (z - z.detach())  # exactly `hard` in the forward pass


def sinkhorn(z: Tensor, tau: float = 0.05, iterations: int = 20, tol: float | None = None) -> Tensor:
    """Doubly stochastic matrix Sinkhorn(exp(z / τ)), normalised in log space for stability:
    alternate row and column normalisations, at most ``iterations`` rounds, stopping early (checked
    every 10 rounds) once the row sums are within ``tol`` of 1 (the columns are exact after each)."""
    log_p = z / tau
    for done in range(1, iterations + 1):
        log_p = log_p - torch.logsumexp(log_p, dim=-1, keepdim=True)
        log_p = log_p - torch.logsumexp(log_p, dim=-2, keepdim=True)
        # checked every 10 rounds: each check waits for the device
        if tol is not None and done % 10 == 0 and marginal_error(log_p.detach().exp()) <= tol:
            break
    return log_p.exp()


def marginal_error(p: Tensor) -> float:
    """Largest |row sum − 1| or |column sum − 1| of (a stack of) square matrices: 0 for a doubly
    stochastic matrix."""
    return float(max((p.sum(-1) - 1).abs().max(), (p.sum(-2) - 1).abs().max()))
