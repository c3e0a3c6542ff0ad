"""The canonical form: a pre-norm Transformer rewritten so every symmetry is a matrix action.

SPEC section 2. Starting from a model whose blocks read the residual stream x through
LayerNorm and write back through attention and an MLP:

1. Centre the stream: right-multiply every residual *writer* by M = I - (1/d) 1 1ᵀ. The stream
   then has zero mean, so LayerNorm(x) = RMSNorm(x) * γ + β exactly (same eps). Fold γ into the
   reader that follows (W <- diag(γ) W) and keep b = β / γ as an offset added after the norm:

       norm(x) = x / sqrt(mean(x²) + eps) + b

2. Write attention head i on the bias-augmented input x̃ = [x, 1] as two circuits

       QK_i = W̃_Q,i W̃_K,iᵀ ∈ R^{(d+1)×(d+1)},   OV_i = W̃_V,i W_O,i ∈ R^{(d+1)×d}

   scores = scale · x̃ QK_i x̃ᵀ, output = softmax(scores) x̃ OV_i, plus the output bias once.
   Any per-head invertible map (W_Q A, W_K A^-T; W_V B, B^-1 W_O) leaves both unchanged.

Row-vector convention throughout: a linear map is `x @ W` with W of shape (in, out).

Every canonical parameter carries a tuple of axis roles (`PARAM_AXES`): the symmetry classes
(`lmc_core.symmetry`) and the alignment methods read this table instead of knowing the
architecture, in the spirit of Git Re-Basin's permutation spec.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS = ("gelu", "gelu_tanh", "relu")
TASKS = ("image", "text")

# Axis roles. "res": residual axis of a writer (x -> x O). "res_read": residual axis of a reader
# (W -> c Oᵀ W). "res_aug": bias-augmented residual axis of a circuit (Õ = blockdiag(c O, 1)).
# "offset": norm offset (b -> b O / c). "head_read"/"head_write": the head axis of QK / OV.
# "unit_read"/"unit_write": MLP hidden units on the input / output side. "layer": block index.
PARAM_AXES: dict[str, tuple[str | None, ...]] = {
    # image embedding
    "patch_embed": (None, "res"),
    "patch_bias": ("res",),
    "pos_embed": (None, "res"),
    "prefix": (None, "res"),
    # text embedding
    "token_embed": (None, "res"),
    # blocks, stacked over layers
    "norm1": ("layer", "offset"),
    "qk": ("layer", "head_read", "res_aug", "res_aug"),
    "ov": ("layer", "head_write", "res_aug", "res"),
    "attn_bias": ("layer", "res"),
    "norm2": ("layer", "offset"),
    "mlp_in": ("layer", "res_read", "unit_read"),
    "mlp_in_bias": ("layer", "unit_read"),
    "mlp_out": ("layer", "unit_write", "res"),
    "mlp_out_bias": ("layer", "res"),
    # output
    "norm_final": ("offset",),
    "head": ("res_read", None),
    "head_bias": (None,),
}
EMBED_PARAMS = {"image": ("patch_embed", "patch_bias", "pos_embed", "prefix"), "text": ("token_embed", "pos_embed")}
BLOCK_PARAMS = ("norm1", "qk", "ov", "attn_bias", "norm2", "mlp_in", "mlp_in_bias", "mlp_out", "mlp_out_bias")
OUTPUT_PARAMS = ("norm_final", "head", "head_bias")


def param_names(task: str) -> tuple[str, ...]:
    """The canonical parameter names of a model for `task` ("image" or "text"), in order."""
    return EMBED_PARAMS[task] + BLOCK_PARAMS + OUTPUT_PARAMS


@dataclass(frozen=True)
class CanonicalConfig:
    """Structure of a canonical Transformer; everything but the weights."""

    task: str  # "image": class logits from images; "text": next-token logits from ids
    depth: int
    width: int  # residual stream d
    num_heads: int
    mlp_width: int
    eps: float  # RMSNorm eps (scaled by N/M under a width lift)
    activation: str  # one of ACTIVATIONS
    num_outputs: int  # classes or vocabulary size
    attn_scales: tuple[float, ...]  # softmax scale per layer (1/sqrt(head_dim) unless the source says otherwise)
    causal: bool = False
    # image models
    patch_size: int = 0
    in_chans: int = 0
    img_size: int = 0
    num_prefix: int = 0  # class + register tokens
    pool: str = "token"  # "token": first prefix token; "avg": mean of the patch tokens
    norm_after_pool: bool = False  # timm's fc_norm: the final norm follows the pooling
    # text models
    max_positions: int = 0
    source: str = ""  # the adapter that produced it

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if len(self.attn_scales) != self.depth:
            raise ValueError(f"attn_scales has {len(self.attn_scales)} entries for depth {self.depth}")

    def replace(self, **changes) -> CanonicalConfig:
        return dataclasses.replace(self, **changes)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape every canonical parameter must have."""
        L, d, H, m, K = self.depth, self.width, self.num_heads, self.mlp_width, self.num_outputs
        shapes: dict[str, tuple[int, ...]] = {}
        if self.task == "image":
            n_patches = (self.img_size // self.patch_size) ** 2
            shapes |= {
                "patch_embed": (self.in_chans * self.patch_size**2, d),
                "patch_bias": (d,),
                "pos_embed": (n_patches, d),
                "prefix": (self.num_prefix, d),
            }
        else:
            shapes |= {"token_embed": (K, d), "pos_embed": (self.max_positions, d)}
        shapes |= {
            "norm1": (L, d),
            "qk": (L, H, d + 1, d + 1),
            "ov": (L, H, d + 1, d),
            "attn_bias": (L, d),
            "norm2": (L, d),
            "mlp_in": (L, d, m),
            "mlp_in_bias": (L, m),
            "mlp_out": (L, m, d),
            "mlp_out_bias": (L, d),
            "norm_final": (d,),
            "head": (d, K),
            "head_bias": (K,),
        }
        return shapes


def rms_norm(x: Tensor, eps: float) -> Tensor:
    """x / sqrt(mean(x²) + eps) over the last axis (no scale: it is folded into the readers)."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def activation(name: str, x: Tensor) -> Tensor:
    if name == "gelu":
        return F.gelu(x)
    if name == "gelu_tanh":
        return F.gelu(x, approximate="tanh")
    return F.relu(x)


def image_patches(images: Tensor, patch_size: int) -> Tensor:
    """(B, C, H, W) -> (B, n_patches, C·p·p), row-major over the patch grid, each patch
    flattened in the (C, p, p) order of a Conv2d weight, so `patches @ W_E` is the patch conv."""
    B, C, H, W = images.shape
    p = patch_size
    x = images.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(B, (H // p) * (W // p), C * p * p)


FACTOR_KEYS = ("qk_left", "qk_right", "ov_left", "ov_right")
FACTOR_TOLERANCE = 1e-6  # largest relative (Frobenius) reconstruction error of a factored circuit
FACTOR_MAX_FILL = 0.6  # factor only when the rank is below this fraction of d + 1: else no gain
FACTOR_SLICE_BYTES = 2**28  # float64 circuits factored at once (bounds the temporaries, ~5x this)


@torch.no_grad()
def factor_circuits(params: Mapping[str, Tensor], rank: int, *, seed: int = 0) -> dict[str, Tensor] | None:
    """Exact rank-`rank` factors of every QK and OV circuit (keys FACTOR_KEYS), or None when they
    would not pay (rank ≥ FACTOR_MAX_FILL · (d+1)) or some circuit is not of rank `rank`.

    A head of the original model has circuits of rank head_dim (bias row included), and a mix of
    M models rank M · head_dim, far below d + 1. With QK = L_QK R_QKᵀ and OV = L_OV R_OVᵀ,
    attention costs what a head of dimension `rank` costs instead of d + 1 (`canonical_forward`
    uses the factors when `params` holds them). Found in float64 by a randomised range finder
    with one power step: L spans C (Cᵀ C G) for a Gaussian G (d+1 × rank), orthonormalised by
    Cholesky QR (twice; batched QR and eigh are slow on CPU); R = Cᵀ L. A circuit of lower rank
    makes the Cholesky fail, one of higher rank fails the check of every circuit's relative
    reconstruction error against FACTOR_TOLERANCE: both give None, and the dense circuits are
    used. Deterministic (fixed `seed`): equal circuits get equal factors."""
    qk, ov = params["qk"], params["ov"]
    size = qk.shape[-1]
    if rank < 1 or rank >= FACTOR_MAX_FILL * size:
        return None
    generator = torch.Generator(device=qk.device).manual_seed(seed)
    probe = torch.randn(size, rank, generator=generator, dtype=torch.float64, device=qk.device)
    out: dict[str, Tensor] = {}
    for name, circuit in (("qk", qk), ("ov", ov)):
        # In slices of the leading (ensemble) axis: the float64 temporaries of a 231-point simplex
        # of 256-wide models would take ~18 GB at once.
        flat = circuit.reshape(-1, *circuit.shape[-2:])
        step = max(1, FACTOR_SLICE_BYTES // (8 * flat[0].numel()))
        parts = [_factor_slice(flat[i:i + step], probe[: circuit.shape[-1]]) for i in range(0, len(flat), step)]
        if any(part is None for part in parts):
            return None
        for side, index in (("left", 0), ("right", 1)):
            factor = torch.cat([part[index] for part in parts])
            out[f"{name}_{side}"] = factor.reshape(*circuit.shape[:-1], rank).to(circuit.dtype) if side == "left" \
                else factor.reshape(*circuit.shape[:-2], circuit.shape[-1], rank).to(circuit.dtype)
    return out


def _factor_slice(circuit: Tensor, probe: Tensor) -> tuple[Tensor, Tensor] | None:
    """(L, R) with circuit = L Rᵀ for a stack of circuits (see `factor_circuits`), or None."""
    c = circuit.double()
    c_t = c.transpose(-1, -2)
    basis = _cholesky_qr(c @ probe)  # OV has d columns, QK d + 1
    left = None if basis is None else _cholesky_qr(c @ (c_t @ basis))  # the power step
    if left is None:
        return None
    right = c_t @ left
    error = torch.linalg.matrix_norm(c - left @ right.transpose(-1, -2))
    scale = torch.linalg.matrix_norm(c).clamp_min(torch.finfo(torch.float64).tiny)
    if float((error / scale).max()) > FACTOR_TOLERANCE:
        return None
    return left, right


def _cholesky_qr(y: Tensor) -> Tensor | None:
    """Orthonormal columns spanning y's (batched) columns, by Cholesky QR applied twice; None
    when y has fewer independent columns than it has columns (the Cholesky fails)."""
    for _ in range(2):
        lower, info = torch.linalg.cholesky_ex(y.transpose(-1, -2) @ y)
        if bool((info != 0).any()):
            return None
        y = torch.linalg.solve_triangular(lower, y.transpose(-1, -2), upper=False).transpose(-1, -2)
    return y


def _embed_tokens(table: Tensor, inputs: Tensor) -> Tensor:
    """(E, B, T, d) rows of the E members' token tables (E, K, d). Through `F.embedding`, whose
    CPU backward adds each table row's gradients in input order whatever the thread count;
    advanced indexing (table[:, inputs]) adds them with atomics on several threads, in an order
    that changes from run to run. An id outside [0, K) is refused: offset into the stacked
    tables it would silently read another member's row."""
    E, K, _ = table.shape
    if inputs.numel() and inputs.device.type != "meta" and (int(inputs.min()) < 0 or int(inputs.max()) >= K):
        raise ValueError(f"token ids must lie in [0, {K}) for this model's {K} tokens, got "
                         f"[{int(inputs.min())}, {int(inputs.max())}]: tokenize with the model's own tokenizer")
    offsets = torch.arange(E, device=inputs.device).view(E, 1, 1) * K
    return F.embedding(inputs.unsqueeze(0) + offsets, table.reshape(E * K, -1))


def canonical_forward(params: Mapping[str, Tensor], config: CanonicalConfig, inputs: Tensor,
                      record: dict | None = None, dropout: float = 0.0, last_position: bool = True) -> Tensor:
    """Logits of a canonical model, or of an ensemble of them.

    `params` holds each canonical parameter with its `param_shapes` shape, optionally with one
    extra leading axis E (an ensemble: e.g. the same model at E interpolation weights). Inputs
    are shared by the ensemble. Returns (B, K) / (B, T, K) logits, or (E, B, ...) for an ensemble.
    If `record` is a dict, it receives per layer the MLP hidden activations ("mlp", layer):
    (E, B, T, m) and the attention probabilities ("attn", layer): (E, B, H, T, T), for activation
    matching (this computes attention explicitly, as does bf16 autocast on CPU). When `params` also holds the
    circuits' factors (`factor_circuits`, keys FACTOR_KEYS), attention runs on them.
    `dropout` > 0 drops, as GPT-2 does in training, the summed embeddings, the attention
    probabilities and each block's attention and MLP outputs (the authors' learned matching
    keeps it on in its objective); 0, the default, is the model's function. The canonical stream is
    centred and dropout does not keep it centred, so the dropped stream's RMSNorm is close to, not
    the same as, GPT-2's LayerNorm of its own dropped stream. `last_position=False` (token ids)
    leaves out the last position's logits, which next-token training never reads: (…, T − 1, K).
    """
    def drop(x: Tensor) -> Tensor:
        return F.dropout(x, dropout, training=True) if dropout > 0 else x

    def residual_add(h: Tensor, out: Tensor, bias: Tensor) -> Tensor:
        # without dropout the sums keep their order: results bit-identical to the plain forward
        return h + drop(out + bias) if dropout > 0 else h + out + bias

    ensemble = params["qk"].dim() == 5
    p = params if ensemble else {k: v.unsqueeze(0) for k, v in params.items()}
    E = p["qk"].shape[0]
    c = config
    factored = all(key in p for key in FACTOR_KEYS)
    if c.task == "image":
        if inputs.dim() != 4 or tuple(inputs.shape[1:]) != (c.in_chans, c.img_size, c.img_size):
            raise ValueError(
                f"expected images of shape (B, {c.in_chans}, {c.img_size}, {c.img_size}), got {tuple(inputs.shape)}"
            )
        patches = image_patches(inputs.to(p["patch_embed"].dtype), c.patch_size)
        h = torch.einsum("bnk,ekd->ebnd", patches, p["patch_embed"])
        h = h + p["patch_bias"][:, None, None] + p["pos_embed"][:, None]
        B = inputs.shape[0]
        if c.num_prefix:
            h = torch.cat([p["prefix"][:, None].expand(E, B, -1, -1), h], dim=2)
    else:
        if inputs.dim() != 2:
            raise ValueError(f"expected token ids of shape (B, T), got {tuple(inputs.shape)}")
        T = inputs.shape[1]
        if T > c.max_positions:
            raise ValueError(f"sequence of {T} tokens exceeds the model's {c.max_positions} positions")
        h = _embed_tokens(p["token_embed"], inputs) + p["pos_embed"][:, None, :T]
    h = drop(h)
    B, T, d = h.shape[1], h.shape[2], c.width
    ones = h.new_ones(E, B, T, 1)
    # torch's CPU flash attention is slow in bf16 (3-4x the explicit softmax(QKᵀ)V at these sizes)
    explicit = h.device.type == "cpu" and torch.is_autocast_enabled("cpu")
    for layer in range(c.depth):
        n = rms_norm(h, c.eps) + p["norm1"][:, layer, None, None]
        aug = torch.cat([n, ones], dim=-1)  # x̃ = [x, 1]
        if factored:  # scores x̃ L_QK (x̃ R_QK)ᵀ, values x̃ L_OV, output · R_OVᵀ
            q = torch.einsum("ebta,ehak->ebhtk", aug, p["qk_left"][:, layer])
            k = torch.einsum("ebta,ehak->ebhtk", aug, p["qk_right"][:, layer])
            v = torch.einsum("ebta,ehak->ebhtk", aug, p["ov_left"][:, layer])
            out_map = p["ov_right"][:, layer].transpose(-1, -2)  # (E, H, rank, d)
        else:  # scores x̃ QK_i x̃ᵀ; keys and values are x̃ itself
            q = torch.einsum("ebta,ehac->ebhtc", aug, p["qk"][:, layer])
            k = v = aug.unsqueeze(2).expand(E, B, c.num_heads, T, d + 1)
            out_map = p["ov"][:, layer]
        if record is None and not explicit:
            z = F.scaled_dot_product_attention(
                q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1),
                is_causal=c.causal, scale=c.attn_scales[layer], dropout_p=dropout,
            ).unflatten(0, (E, B))  # softmax(scores) values, per head
        else:
            scores = torch.einsum("ebhtc,ebhsc->ebhts", q, k) * c.attn_scales[layer]
            if c.causal:
                mask = torch.ones(T, T, dtype=torch.bool, device=h.device).triu(1)
                scores = scores.masked_fill(mask, float("-inf"))
            probs = scores.float().softmax(-1)  # float32 under autocast too, as the fused kernels do
            if record is not None:
                record[("attn", layer)] = probs
            z = torch.einsum("ebhts,ebhsc->ebhtc", drop(probs), v)
        h = residual_add(h, torch.einsum("ebhta,ehad->ebtd", z, out_map), p["attn_bias"][:, layer, None, None])
        n = rms_norm(h, c.eps) + p["norm2"][:, layer, None, None]
        u = torch.einsum("ebtd,edm->ebtm", n, p["mlp_in"][:, layer]) + p["mlp_in_bias"][:, layer, None, None]
        u = activation(c.activation, u)
        if record is not None:
            record[("mlp", layer)] = u
        h = residual_add(h, torch.einsum("ebtm,emd->ebtd", u, p["mlp_out"][:, layer]), p["mlp_out_bias"][:, layer, None, None])

    def final_norm(x: Tensor) -> Tensor:
        offset = p["norm_final"].reshape(E, *([1] * (x.dim() - 2)), d)
        return rms_norm(x, c.eps) + offset

    if c.task == "image":
        if not c.norm_after_pool:
            h = final_norm(h)
        h = h[:, :, 0] if c.pool == "token" else h[:, :, c.num_prefix:].mean(2)
        if c.norm_after_pool:
            h = final_norm(h)
        logits = torch.einsum("ebd,edk->ebk", h, p["head"]) + p["head_bias"][:, None]
    else:
        if not last_position:
            h = h[:, :, :-1]
        features = final_norm(h).flatten(1, 2)
        autocast = features.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(features.device.type)
        if autocast:  # the bias added in float32: float32 logits
            flat = torch.bmm(features, p["head"]) + p["head_bias"][:, None]
        else:  # one fused matmul-and-bias: the head is the largest layer of a language model
            flat = torch.baddbmm(p["head_bias"][:, None], features, p["head"])
        logits = flat.unflatten(1, h.shape[1:3])
    return logits if ensemble else logits.squeeze(0)  # a view: no full-size gradient buffer in backward


class CanonicalTransformer(nn.Module):
    """A Transformer in canonical form (see the module docstring). Its forward gives the same
    logits as the model it was made from, in eval mode: images -> class logits, token ids ->
    next-token logits. Parameters are stacked over layers, named as in `PARAM_AXES`."""

    def __init__(self, config: CanonicalConfig, params: Mapping[str, Tensor]):
        super().__init__()
        self.config = config
        expected = config.param_shapes()
        missing = set(expected) - set(params)
        extra = set(params) - set(expected)
        if missing or extra:
            raise ValueError(f"canonical parameters: missing {sorted(missing)}, unexpected {sorted(extra)}")
        dtypes = {v.dtype for v in params.values()}
        if len(dtypes) != 1:
            raise TypeError(f"canonical parameters must share one dtype, got {sorted(map(str, dtypes))}")
        for name, shape in expected.items():
            value = params[name]
            if tuple(value.shape) != shape:
                raise ValueError(f"canonical parameter {name!r} has shape {tuple(value.shape)}, expected {shape}")
            self.register_parameter(name, nn.Parameter(value.detach().clone()))

    # -- structure -------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        return self.config.depth

    @property
    def width(self) -> int:
        return self.config.width

    @property
    def num_heads(self) -> int:
        return self.config.num_heads

    @property
    def mlp_width(self) -> int:
        return self.config.mlp_width

    @property
    def eps(self) -> float:
        return self.config.eps

    @property
    def activation(self) -> str:
        return self.config.activation

    def params(self) -> dict[str, Tensor]:
        """Canonical parameters by name (the live Parameters, in `param_names` order)."""
        return {name: getattr(self, name) for name in param_names(self.config.task)}

    def with_params(self, params: Mapping[str, Tensor], config: CanonicalConfig | None = None) -> CanonicalTransformer:
        """A new canonical model with these parameters (and optionally another config)."""
        return CanonicalTransformer(config or self.config, params)

    def forward(self, inputs: Tensor) -> Tensor:
        return canonical_forward(self.params(), self.config, inputs)

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"task={c.task}, depth={c.depth}, width={c.width}, heads={c.num_heads}, mlp={c.mlp_width}, "
            f"outputs={c.num_outputs}, activation={c.activation}, eps={c.eps:g}, source={c.source}"
        )


def check_compatible(a: CanonicalTransformer, b: CanonicalTransformer, *, what: str = "models") -> None:
    """Raise a clear error unless the two canonical models have the same structure."""
    ca, cb = a.config, b.config
    fields = ("task", "depth", "width", "num_heads", "mlp_width", "num_outputs", "activation", "causal",
              "patch_size", "in_chans", "img_size", "num_prefix", "pool", "norm_after_pool", "max_positions")
    diffs = [f"{f}: {getattr(ca, f)!r} vs {getattr(cb, f)!r}" for f in fields if getattr(ca, f) != getattr(cb, f)]
    if not math.isclose(ca.eps, cb.eps, rel_tol=1e-9):
        diffs.append(f"eps: {ca.eps!r} vs {cb.eps!r}")
    if any(not math.isclose(x, y, rel_tol=1e-9) for x, y in zip(ca.attn_scales, cb.attn_scales, strict=False)):
        diffs.append(f"attn_scales: {ca.attn_scales!r} vs {cb.attn_scales!r}")
    if diffs:
        raise ValueError(
            f"{what} have different architectures ({'; '.join(diffs)}). Interpolation and alignment need the "
            "same structure: lift a narrower model first (lmc_core.lift_width(narrow, target=wide.config), "
            "which align() does) or compare like with like."
        )
