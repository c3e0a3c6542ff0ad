"""Activation matching, the baseline of Verma & Elbayad (2024), on the canonical form.

Permutations of MLP units and of heads from correlations of activations on one batch of data;
the residual stream keeps the identity map. MLP units are matched on the Pearson correlation
of their post-activation values over all tokens. Heads are matched on the correlation of their
attention patterns (one value per query-key pair): unlike head outputs, which live in each
model's own residual basis, patterns can be compared across models without a residual map.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from ..canonical import CanonicalTransformer, canonical_forward
from ..symmetry import Symmetry, UnitMap
from .solvers import assignment, one_hot_rows


@torch.no_grad()
def collect_activations(model: CanonicalTransformer, inputs: Tensor) -> dict:
    record: dict = {}
    canonical_forward(model.params(), model.config, inputs, record=record)
    return record


def take_samples(data: Iterable, samples: int, device: torch.device) -> Tensor:
    """Concatenate input batches until `samples` items (images or sequences) are gathered."""
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], Tensor):
        data = [data]
    chunks, count = [], 0
    for inputs, _ in data:
        chunks.append(inputs[: samples - count].to(device))
        count += chunks[-1].shape[0]
        if count >= samples:
            break
    if not chunks:
        raise ValueError("activation matching needs data: pass data=(inputs, targets) or an iterable of batches")
    return torch.cat(chunks)


def activation_matching(model_a: CanonicalTransformer, model_b: CanonicalTransformer, data: Iterable, *,
                        samples: int = 1024, chunk: int = 64) -> Symmetry:
    """Head and MLP permutations of B that maximise activation correlations with A."""
    cfg = model_a.config
    device = model_a.params()["qk"].device
    inputs = take_samples(data, samples, device)
    mlp_corr = torch.zeros(cfg.depth, cfg.mlp_width, cfg.mlp_width, dtype=torch.float64, device=device)
    head_corr = torch.zeros(cfg.depth, cfg.num_heads, cfg.num_heads, dtype=torch.float64, device=device)
    # Correlations are sums over items of standardized products, so accumulate raw moments.
    moments: dict = {}
    for start in range(0, inputs.shape[0], chunk):
        batch = inputs[start:start + chunk]
        rec_a, rec_b = collect_activations(model_a, batch), collect_activations(model_b, batch)
        for layer in range(cfg.depth):
            for kind in ("mlp", "attn"):
                a, b = rec_a[(kind, layer)][0], rec_b[(kind, layer)][0]
                if kind == "attn":  # (B, H, T, T) -> (B·T·T, H)
                    a, b = a.movedim(1, -1), b.movedim(1, -1)
                a, b = a.reshape(-1, a.shape[-1]).double(), b.reshape(-1, b.shape[-1]).double()
                key = (kind, layer)
                acc = moments.setdefault(key, [0, 0, 0, 0, 0, 0])
                acc[0] += a.shape[0]
                acc[1] = acc[1] + a.sum(0)
                acc[2] = acc[2] + b.sum(0)
                acc[3] = acc[3] + (a * a).sum(0)
                acc[4] = acc[4] + (b * b).sum(0)
                acc[5] = acc[5] + a.T @ b
    for (kind, layer), (n, sa, sb, saa, sbb, sab) in moments.items():
        cov = sab - torch.outer(sa, sb) / n
        std_a = (saa - sa * sa / n).clamp_min(1e-24).sqrt()
        std_b = (sbb - sb * sb / n).clamp_min(1e-24).sqrt()
        corr = cov / torch.outer(std_a, std_b)
        (mlp_corr if kind == "mlp" else head_corr)[layer] = corr
    dtype = model_a.params()["qk"].dtype
    heads = one_hot_rows(assignment(head_corr), cfg.num_heads, dtype)
    units = one_hot_rows(assignment(mlp_corr), cfg.mlp_width, dtype)
    return Symmetry(None, UnitMap(heads, heads), UnitMap(units, units))
