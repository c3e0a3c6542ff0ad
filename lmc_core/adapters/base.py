"""What an adapter reads out of a model, and the one generic rewrite into canonical form.

An adapter (one small file per architecture, in the manner of SliceGPT's model adapters) says
where the residual stream is read and written: it returns a `RawTransformer` in the row-vector
convention, with LayerNorm scales and biases still separate. `build_canonical` then does the
centring, the γ folding and the circuit products of SPEC section 2 once, for every architecture.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..canonical import CanonicalConfig, CanonicalTransformer


def imported_class(module: str, name: str) -> type | None:
    """``module.name`` if ``module`` is imported already, else None: no model can be an instance
    of a class whose module was never imported, so an adapter tests its framework's class without
    importing the framework (importing transformers costs seconds)."""
    loaded = sys.modules.get(module)
    return getattr(loaded, name, None) if loaded is not None else None


class UnsupportedModelError(ValueError):
    """The model (or one of its options) has no canonical form here; the message says why."""


@dataclass
class LayerNormWeights:
    scale: Tensor  # γ, (d,)
    bias: Tensor  # β, (d,)
    eps: float


@dataclass
class AttentionWeights:
    """One attention layer, per head, row-vector convention. Biases may be None (meaning zero)."""

    q_w: Tensor  # (d, H, dh)
    k_w: Tensor  # (d, H, dh)
    v_w: Tensor  # (d, H, dh)
    o_w: Tensor  # (H, dh, d)
    q_b: Tensor | None = None  # (H, dh)
    k_b: Tensor | None = None
    v_b: Tensor | None = None
    o_b: Tensor | None = None  # (d,)


@dataclass
class BlockWeights:
    norm1: LayerNormWeights
    attn: AttentionWeights
    norm2: LayerNormWeights
    mlp_in: Tensor  # (d, m)
    mlp_in_bias: Tensor | None  # (m,)
    mlp_out: Tensor  # (m, d)
    mlp_out_bias: Tensor | None  # (d,)


@dataclass
class RawTransformer:
    """A pre-norm Transformer as an adapter reads it. `embed` holds the residual writers of the
    input stage under their canonical names (uncentred); `head` is (d, K)."""

    config: CanonicalConfig
    embed: dict[str, Tensor]
    blocks: list[BlockWeights]
    norm_final: LayerNormWeights
    head: Tensor
    head_bias: Tensor | None


def _augmented(w: Tensor, b: Tensor | None) -> Tensor:
    """[[W], [b]]: (d, H, k) and (H, k) -> (H, d+1, k), so that x̃ W̃ = x W + b with x̃ = [x, 1]."""
    bias = torch.zeros_like(w[:1]) if b is None else b.unsqueeze(0)
    return torch.cat([w, bias], dim=0).permute(1, 0, 2)


def _fold(norm: LayerNormWeights, what: str) -> tuple[Tensor, Tensor]:
    """γ to fold into the next reader, and the offset β/γ kept after the RMSNorm."""
    if not torch.isfinite(norm.scale).all() or not torch.isfinite(norm.bias).all():
        raise ValueError(f"{what}: LayerNorm weights contain NaN or inf")
    if (norm.scale == 0).any():
        idx = torch.nonzero(norm.scale == 0).flatten().tolist()[:8]
        raise ValueError(
            f"{what}: LayerNorm scale is exactly zero at channels {idx}; the canonical form divides by it "
            "(offset = β/γ). Perturb those scales (e.g. to 1e-6) or prune the channels first."
        )
    return norm.scale, norm.bias / norm.scale


def _named_tensors(raw: RawTransformer) -> dict[str, Tensor]:
    """Every tensor an adapter read, by a name that says where it came from."""
    tensors = {f"embedding {k}": v for k, v in raw.embed.items()}
    for i, block in enumerate(raw.blocks):
        for part in ("norm1", "norm2"):
            norm = getattr(block, part)
            tensors |= {f"block {i} {part} scale": norm.scale, f"block {i} {part} bias": norm.bias}
        for key, value in vars(block.attn).items():
            tensors[f"block {i} attention {key}"] = value
        for key in ("mlp_in", "mlp_in_bias", "mlp_out", "mlp_out_bias"):
            tensors[f"block {i} {key}"] = getattr(block, key)
    tensors |= {"final norm scale": raw.norm_final.scale, "final norm bias": raw.norm_final.bias,
                "head": raw.head, "head bias": raw.head_bias}
    return {k: v for k, v in tensors.items() if v is not None}


def _check_tensors(raw: RawTransformer) -> None:
    """One dtype and finite values everywhere, or a clear error naming the tensor."""
    tensors = _named_tensors(raw)
    dtypes = {t.dtype for t in tensors.values()}
    if len(dtypes) != 1:
        raise TypeError(
            f"the model mixes parameter dtypes {sorted(map(str, dtypes))}; cast it to one dtype first "
            "(e.g. model.float() or model.double())"
        )
    for name, value in tensors.items():
        if not torch.isfinite(value).all():
            raise ValueError(f"{name}: weights contain NaN or inf; the model cannot be canonicalised")


def build_canonical(raw: RawTransformer) -> CanonicalTransformer:
    """The SPEC section 2 rewrite of any pre-norm Transformer read by an adapter."""
    config = raw.config
    d = config.width
    params = {name: value for name, value in raw.embed.items()}
    _check_tensors(raw)
    dtype = raw.head.dtype
    center = torch.eye(d, dtype=dtype, device=raw.head.device) - 1.0 / d  # M = I - (1/d) 1 1ᵀ

    for name in params:  # every embedding tensor writes into the stream
        params[name] = params[name] @ center

    layers: dict[str, list[Tensor]] = {k: [] for k in (
        "norm1", "qk", "ov", "attn_bias", "norm2", "mlp_in", "mlp_in_bias", "mlp_out", "mlp_out_bias")}
    for i, block in enumerate(raw.blocks):
        a = block.attn
        gamma1, offset1 = _fold(block.norm1, f"block {i} norm1")
        gamma2, offset2 = _fold(block.norm2, f"block {i} norm2")
        g = gamma1[:, None, None]
        q = _augmented(a.q_w * g, a.q_b)  # (H, d+1, dh): diag(γ) folded into the reader
        k = _augmented(a.k_w * g, a.k_b)
        v = _augmented(a.v_w * g, a.v_b)
        o = a.o_w @ center  # (H, dh, d): the output projection writes into the stream
        layers["qk"].append(q @ k.transpose(1, 2))
        layers["ov"].append(v @ o)
        layers["attn_bias"].append((a.o_b if a.o_b is not None else torch.zeros(d, dtype=dtype, device=center.device)) @ center)
        layers["norm1"].append(offset1)
        layers["norm2"].append(offset2)
        layers["mlp_in"].append(gamma2[:, None] * block.mlp_in)
        m = block.mlp_in.shape[1]
        layers["mlp_in_bias"].append(block.mlp_in_bias if block.mlp_in_bias is not None else block.mlp_in.new_zeros(m))
        layers["mlp_out"].append(block.mlp_out @ center)
        layers["mlp_out_bias"].append(
            (block.mlp_out_bias if block.mlp_out_bias is not None else block.mlp_out.new_zeros(d)) @ center)
    params |= {name: torch.stack(values) for name, values in layers.items()}

    gamma_f, offset_f = _fold(raw.norm_final, "final norm")
    params["norm_final"] = offset_f
    params["head"] = gamma_f[:, None] * raw.head
    params["head_bias"] = raw.head_bias if raw.head_bias is not None else raw.head.new_zeros(raw.head.shape[1])
    return CanonicalTransformer(config, params)


class Adapter:
    """One architecture: which models it takes, how to read them, and where their heads live.

    Subclasses implement `matches`, `read` and the per-layer attention accessors used by the
    invertible symmetry class (which acts on the original model, not on the canonical form)."""

    name: str = ""

    def matches(self, model: nn.Module) -> bool:
        raise NotImplementedError

    def read(self, model: nn.Module) -> RawTransformer:
        raise NotImplementedError

    def get_attention(self, model: nn.Module, layer: int) -> AttentionWeights:
        raise NotImplementedError

    def set_attention(self, model: nn.Module, layer: int, weights: AttentionWeights) -> None:
        raise NotImplementedError

    def num_layers(self, model: nn.Module) -> int:
        raise NotImplementedError

    def write(self, like: nn.Module, raw: RawTransformer) -> nn.Module:
        """The inverse of `read`: a new model of `like`'s class and structure with `raw`'s
        weights (`like` is left as it is). Used by `lmc_core.export`."""
        raise NotImplementedError(f"the adapter {self.name or type(self).__name__} has no export hook (Adapter.write)")


def copy_into(target: Tensor | None, value: Tensor | None, what: str) -> None:
    """Copy `value` into the parameter `target` (reshaped to its shape). Where the model has no
    such parameter (`target` None, e.g. qkv_bias=False) the value must be zero to the dtype's
    precision, else the model cannot hold it: a clear error says so."""
    if value is None:
        if target is not None:
            target.zero_()
        return
    if target is None:
        tol = 1e-5 if value.dtype in (torch.float32, torch.bfloat16, torch.float16) else 1e-10
        largest = float(value.abs().max()) if value.numel() else 0.0
        if largest > tol:
            raise UnsupportedModelError(
                f"{what} is nonzero (largest entry {largest:.2e}) but the target model has no such parameter; "
                "export into a model built with it (e.g. qkv_bias=True / bias=True)")
        return
    target.copy_(value.reshape(target.shape).to(target))
