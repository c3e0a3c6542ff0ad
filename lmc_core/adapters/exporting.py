"""Export a canonical model back into the original library's class (timm ViT, HF GPT-2).

`export(model, like=original)` returns a model of `like`'s class and structure that computes
the canonical model's function. It inverts SPEC section 2 in the gauge γ = 1:

- Norms. A LayerNorm with γ = 1, β = b computes x̄ / sqrt(mean(x̄²) + eps) + b with x̄ = x − mean(x),
  which is the canonical norm exactly when the residual stream is centred. So every residual
  writer must be orthogonal to the all-ones direction. Canonicalisation centres them, a
  permutation of the stream keeps them so, and so does an orthogonal map that fixes 1
  (`align(..., keep_centred=True)`); a general rotation or a width lift does not, and then the
  model is not representable with LayerNorms (`NotRepresentableError`).
- Heads. A circuit factors back into per-head weights, QK = W̃_Q W̃_Kᵀ and OV = W̃_V W_O, when
  its rank is at most head_dim: the truncated SVD, split evenly (√σ on each side). The bias
  slot needs no special case: the last row of W̃_Q is the query bias. Two parts of the bias
  slot move elsewhere, exactly: QK's last column (the key bias) adds a constant to every score
  of a query, which softmax ignores, so it is dropped; OV's last row (the value bias) adds the
  same vector at every position, since attention weights sum to 1, so it joins the output bias.
  A merged midpoint mixes heads inside each circuit (rank up to 2 · head_dim), which no model of
  the original class computes: that too is a `NotRepresentableError`.
- Scalars. Softmax scales and eps are made `like`'s by the exact reparametrisations of
  `Symmetry` (QK rescaled; the stream rescaled for eps), so any source scale can be exported.

The adapters' `write` hooks put the weights into the modules (`Adapter.write`, inverse of `read`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..canonical import EMBED_PARAMS, CanonicalConfig
from ..symmetry import Symmetry
from .base import AttentionWeights, BlockWeights, LayerNormWeights, RawTransformer
from .registry import adapter_for, canonicalize

# Relative tolerances: the all-ones share of a writer, and the SVD tail of a circuit beyond
# head_dim. After a float32 canonicalisation and keep_centred learned matching both are round-off
# (~2e-7 at width 64); a rotated stream or a merged midpoint gives ~0.2 (tiny test models).
TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-9}
STRUCTURE = ("task", "depth", "width", "num_heads", "mlp_width", "num_outputs", "activation", "causal",
             "patch_size", "in_chans", "img_size", "num_prefix", "pool", "norm_after_pool", "max_positions")
WRITERS = ("ov", "attn_bias", "mlp_out", "mlp_out_bias")  # besides the embedding tensors


class NotRepresentableError(ValueError):
    """The canonical model computes a function no model of the target class computes."""


def export(model: nn.Module, like: nn.Module) -> nn.Module:
    """A model of `like`'s class (timm VisionTransformer, HF GPT2LMHeadModel, or any adapter
    with a `write` hook) computing `model`'s function (`model` canonical, or raw: canonicalised).

    `like` gives the class and the structure (an original model of the pair is the natural
    choice; its weights are not used). HF models come back with an untied head. Raises
    `NotRepresentableError` when no such model exists (see the module docstring)."""
    canon = canonicalize(model)
    adapter = adapter_for(like)
    target = adapter.read(like).config
    _check_structure(canon.config, target)
    params = {k: v.detach() for k, v in canon.params().items()}
    eps = None if math.isclose(canon.config.eps, target.eps, rel_tol=1e-12) else target.eps
    scales = None if canon.config.attn_scales == target.attn_scales else target.attn_scales
    params, config = Symmetry(eps=eps, attn_scales=scales).apply_params(params, canon.config)
    return adapter.write(like, raw_transformer(params, config))


def _check_structure(source: CanonicalConfig, target: CanonicalConfig) -> None:
    diffs = [f"{f}: {getattr(source, f)!r} vs {getattr(target, f)!r}" for f in STRUCTURE
             if getattr(source, f) != getattr(target, f)]
    if diffs:
        raise NotRepresentableError(
            f"the model and `like` have different structures ({'; '.join(diffs)}); pass as `like` a model of "
            "the aligned model's shape (for a width-lifted B, a model shaped like A)")


def _tolerance(dtype: torch.dtype) -> float:
    return TOLERANCE.get(dtype, TOLERANCE[torch.float32])


def _centred(params: dict[str, Tensor], config: CanonicalConfig) -> dict[str, Tensor]:
    """The residual writers with their (round-off) all-ones component removed, after checking
    that it is round-off."""
    names = EMBED_PARAMS[config.task] + WRITERS
    tol = _tolerance(params["qk"].dtype)
    out = {}
    for name in names:
        value = params[name].double()
        along = value.mean(-1, keepdim=True)  # projection on 1, per vector
        share = float(along.norm() * math.sqrt(config.width) / value.norm().clamp_min(1e-300))
        if share > tol:
            raise NotRepresentableError(
                f"the residual stream is not centred: the writer {name!r} has {share:.1e} of its norm along the "
                "all-ones direction, and a LayerNorm model cannot compute such a stream. An orthogonal residual "
                "map moved that direction: align with keep_centred=True (or a permutation residual), and do not "
                "export a width-lifted model; or keep working with the canonical model.")
        out[name] = (value - along).to(params[name].dtype)
    return out


def _factor(circuit: Tensor, rank: int, name: str, tol: float) -> tuple[Tensor, Tensor]:
    """(left, right) with circuit = left rightᵀ for a stack (L, H, n, k) of circuits, each
    side (.., n | k, rank), balanced; a clear error names the first head beyond `rank`."""
    u, s, vh = torch.linalg.svd(circuit.double(), full_matrices=False)
    tail = s[..., rank:].norm(dim=-1) / s.norm(dim=-1).clamp_min(1e-300)
    if (tail > tol).any():
        layer, head = (int(i) for i in torch.nonzero(tail > tol)[0])
        raise NotRepresentableError(
            f"layer {layer} head {head}: the {name} circuit has rank above head_dim = {rank} ({float(tail[layer, head]):.1e} "
            "of it lies beyond), so no head of the original class computes it. This is what a merged or "
            "interpolated model, or soft matching's maps, give (a mix of heads inside one circuit): evaluate it in "
            "canonical form "
            "(lmc_core.barrier / canonical_forward), or export the aligned endpoints instead.")
    root = s[..., :rank].sqrt()
    return u[..., :rank] * root.unsqueeze(-2), vh[..., :rank, :].transpose(-1, -2) * root.unsqueeze(-2)


def raw_transformer(params: dict[str, Tensor], config: CanonicalConfig) -> RawTransformer:
    """The weights of a LayerNorm model (γ = 1) computing the canonical `params`, per block and
    per head, in the row-vector convention of `adapters.base`."""
    d, H = config.width, config.num_heads
    dh = d // H
    dtype = params["qk"].dtype
    tol = _tolerance(dtype)
    params = params | _centred(params, config)
    qk, ov = params["qk"][..., :d], params["ov"]  # QK's last column: the key bias, dropped (softmax ignores it)
    q, k = _factor(qk, dh, "QK", tol)  # (L, H, d+1, dh), (L, H, d, dh)
    v, o = _factor(ov[..., :d, :], dh, "OV", tol)  # (L, H, d, dh), (L, H, d, dh)
    out_bias = params["attn_bias"].double() + ov[..., d, :].double().sum(1)  # the value bias, moved out

    def norm(offset: Tensor) -> LayerNormWeights:
        return LayerNormWeights(torch.ones_like(offset), offset, config.eps)

    def cast(x: Tensor) -> Tensor:
        return x.to(dtype).contiguous()

    blocks = []
    for layer in range(config.depth):
        zeros = torch.zeros(H, dh, dtype=dtype, device=qk.device)
        attn = AttentionWeights(
            q_w=cast(q[layer, :, :d].transpose(0, 1)), k_w=cast(k[layer].transpose(0, 1)),
            v_w=cast(v[layer].transpose(0, 1)), o_w=cast(o[layer].transpose(1, 2)),
            q_b=cast(q[layer, :, d]), k_b=zeros, v_b=zeros, o_b=cast(out_bias[layer]))
        blocks.append(BlockWeights(
            norm1=norm(params["norm1"][layer]), attn=attn, norm2=norm(params["norm2"][layer]),
            mlp_in=params["mlp_in"][layer], mlp_in_bias=params["mlp_in_bias"][layer],
            mlp_out=params["mlp_out"][layer], mlp_out_bias=params["mlp_out_bias"][layer]))
    embed = {name: params[name] for name in EMBED_PARAMS[config.task]}
    return RawTransformer(config, embed, blocks, norm(params["norm_final"]), params["head"], params["head_bias"])


__all__ = ["NotRepresentableError", "export", "raw_transformer"]
