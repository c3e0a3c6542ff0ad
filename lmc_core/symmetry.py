"""The four symmetry classes of SPEC section 3, and `Symmetry`, which bundles them.

Nested: permutations ⊂ semi-permutations ⊂ orthogonal ⊂ invertible. Every class but the
invertible one acts on the canonical form, and does so through one generic routine: each
canonical parameter declares the role of each of its axes (`canonical.PARAM_AXES`), and a
symmetry contracts each axis with the matching matrix:

    residual O ∈ R^{N×M}, O Oᵀ = I_N, c = sqrt(N/M):
        writers  W -> W O              readers  W -> c Oᵀ W         norm offsets  b -> b O / c
        circuits QK -> Õᵀ QK Õ,  OV -> Õᵀ OV O,   Õ = blockdiag(c O, 1),   eps -> (N/M) eps
    heads (per layer, R, S ∈ R^{M×N}):   QK'_j = Σ_i R_ji QK_i,   OV'_j = Σ_i S_ji OV_i
    MLP units (per layer, R, S ∈ R^{M×N}): W_in' = W_in Rᵀ, b_in' = R b_in, W_out' = S W_out

Two scalar reparametrisations complete a width lift, so that the lifted model can share the
wider model's config: a new eps' with the residual stream scaled by s = sqrt(eps'/eps) (every
writer times s; RMSNorm(s y; s² eps) = RMSNorm(y; eps)), and a new softmax scale with the
circuits rescaled to match (QK -> QK · scale / scale').

A permutation has R = S = P. A semi-permutation has R = the 0/1 copy pattern and S the copy
weights (each original's weights sum to 1), which is exact for any activation because the
copies of a unit see the same input; the paper's form with the weights on the input side
(R = weights, S = pattern) needs ReLU's positive homogeneity. The invertible class acts inside
each head of the *original* model (W_Q A, W_K A^-T; W_V B, B^-1 W_O) and leaves the canonical
circuits unchanged.

All of this is differentiable in the matrices, which is what learned matching needs.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .canonical import PARAM_AXES, CanonicalConfig, CanonicalTransformer


def _contract(x: Tensor, axis: int, matrix: Tensor) -> Tensor:
    """Contract axis `axis` of x (size N) with matrix (N, M), or with a per-layer stack
    (L, N, M) when x's axis 0 is the layer axis; the axis keeps its place with size M."""
    letters = "abcdefg"[: x.dim()]
    mat = ("a" if matrix.dim() == 3 else "") + letters[axis] + "z"
    out = letters[:axis] + "z" + letters[axis + 1:]
    return torch.einsum(f"{letters},{mat}->{out}", x, matrix)


@dataclass
class UnitMap:
    """A per-layer map of heads or MLP units, N -> M: `read` acts on the side that reads the
    unit's input (QK / MLP input weights and bias), `write` on the side that writes its output
    (OV / MLP output weights). Both (L, M, N)."""

    read: Tensor
    write: Tensor

    def __post_init__(self) -> None:
        if self.read.shape != self.write.shape or self.read.dim() != 3:
            raise ValueError(f"UnitMap needs read and write of one shape (L, M, N), got "
                             f"{tuple(self.read.shape)} and {tuple(self.write.shape)}")

    @property
    def sizes(self) -> tuple[int, int]:
        """(N, M): units before and after."""
        return self.read.shape[2], self.read.shape[1]

    def then(self, other: UnitMap) -> UnitMap:
        return UnitMap(_matmul(other.read, self.read), _matmul(other.write, self.write))

    def to(self, *args, **kwargs) -> UnitMap:
        return UnitMap(self.read.to(*args, **kwargs), self.write.to(*args, **kwargs))


@dataclass
class Symmetry:
    """One residual map and per-layer head and MLP maps, applied to a canonical model in one
    call. Any part may be None (identity). This is what the alignment methods return.
    `eps` and `attn_scales` are the scalar reparametrisations of a width lift (module docstring):
    the values the model's config takes, applied after the maps."""

    residual: Tensor | None = None  # (N, M) with O Oᵀ = I_N
    heads: UnitMap | None = None
    mlp: UnitMap | None = None
    eps: float | None = None  # the RMSNorm eps afterwards (residual stream rescaled to keep the function)
    attn_scales: tuple[float, ...] | None = None  # the softmax scale per layer afterwards

    def apply(self, model: CanonicalTransformer) -> CanonicalTransformer:
        """The transformed model (a new CanonicalTransformer; `model` is left as it is)."""
        params, config = self.apply_params(model.params(), model.config)
        return CanonicalTransformer(config, {k: v.detach() for k, v in params.items()})

    def apply_params(self, params: Mapping[str, Tensor], config: CanonicalConfig
                     ) -> tuple[dict[str, Tensor], CanonicalConfig]:
        """Differentiable form of `apply` on a parameter dict."""
        self._check(config)
        dtype, device = params["qk"].dtype, params["qk"].device
        new = dict(params)
        changes: dict = {}
        matrices: dict[str, Tensor] = {}
        if self.residual is not None:
            O = self.residual.to(dtype=dtype, device=device)
            n, m = O.shape
            c = math.sqrt(n / m)
            aug = torch.zeros(n + 1, m + 1, dtype=dtype, device=O.device)
            aug[:n, :m] = c * O
            aug[n, m] = 1.0
            matrices |= {"res": O, "res_read": c * O, "offset": O / c, "res_aug": aug}
            if n != m:  # a square map leaves eps exactly as it is
                changes |= {"width": m, "eps": config.eps * (n / m)}
        if self.heads is not None:
            matrices |= {"head_read": self.heads.read.to(dtype=dtype, device=device).transpose(1, 2),
                         "head_write": self.heads.write.to(dtype=dtype, device=device).transpose(1, 2)}
            changes["num_heads"] = self.heads.sizes[1]
        if self.mlp is not None:
            matrices |= {"unit_read": self.mlp.read.to(dtype=dtype, device=device).transpose(1, 2),
                         "unit_write": self.mlp.write.to(dtype=dtype, device=device).transpose(1, 2)}
            changes["mlp_width"] = self.mlp.sizes[1]
        for name, value in params.items():
            for axis, role in enumerate(PARAM_AXES[name]):
                if role in matrices:
                    value = _contract(value, axis, matrices[role])
            new[name] = value
        if self.eps is not None:
            stream_scale = math.sqrt(self.eps / changes.get("eps", config.eps))
            new |= {name: value * stream_scale for name, value in new.items() if "res" in PARAM_AXES[name]}
            changes["eps"] = self.eps
        if self.attn_scales is not None:
            ratio = torch.tensor([old / new_scale for old, new_scale in zip(config.attn_scales, self.attn_scales,
                                                                             strict=True)], dtype=dtype, device=device)
            new["qk"] = new["qk"] * ratio[:, None, None, None]
            changes["attn_scales"] = tuple(self.attn_scales)
        return new, config.replace(**changes) if changes else config

    def _check(self, config: CanonicalConfig) -> None:
        if self.eps is not None and not (math.isfinite(self.eps) and self.eps > 0):
            raise ValueError(f"eps must be a positive finite number, got {self.eps!r}")
        if self.attn_scales is not None and len(self.attn_scales) != config.depth:
            raise ValueError(f"attn_scales has {len(self.attn_scales)} entries for a model of depth {config.depth}")
        if self.residual is not None and self.residual.shape[0] != config.width:
            raise ValueError(f"residual map is {tuple(self.residual.shape)} but the model's residual width is "
                             f"{config.width}: the map's first dimension must equal the width")
        for name, unit_map, n in (("head", self.heads, config.num_heads), ("MLP", self.mlp, config.mlp_width)):
            if unit_map is None:
                continue
            if unit_map.read.shape[0] != config.depth or unit_map.sizes[0] != n:
                raise ValueError(f"{name} map has shape {tuple(unit_map.read.shape)} but the model has "
                                 f"{config.depth} layers of {n} {name} units: expected ({config.depth}, M, {n})")

    def then(self, other: Symmetry) -> Symmetry:
        """This symmetry followed by `other` (so `a.then(b).apply(m) == b.apply(a.apply(m))`)."""
        def residual() -> Tensor | None:
            if self.residual is None or other.residual is None:
                return other.residual if self.residual is None else self.residual
            return _matmul(self.residual, other.residual)

        def units(a: UnitMap | None, b: UnitMap | None) -> UnitMap | None:
            if a is None or b is None:
                return b if a is None else a
            return a.then(b)

        if self.eps is not None and other.eps is None and other.residual is not None \
                and other.residual.shape[0] != other.residual.shape[1]:
            raise ValueError("cannot compose a symmetry that sets eps with a later width lift that scales it; "
                             "give the lift its own eps target")
        return Symmetry(residual(), units(self.heads, other.heads), units(self.mlp, other.mlp),
                        eps=other.eps if other.eps is not None else self.eps,
                        attn_scales=other.attn_scales if other.attn_scales is not None else self.attn_scales)

    def inverse(self) -> Symmetry:
        """The inverse, for square orthogonal residual maps and permutations of units."""
        if self.residual is not None and self.residual.shape[0] != self.residual.shape[1]:
            raise ValueError("a width lift (rectangular O) has no inverse within the narrow model's width")
        for name, unit_map in (("head", self.heads), ("MLP", self.mlp)):
            if unit_map is not None and not (_is_permutation(unit_map.read) and torch.equal(unit_map.read, unit_map.write)):
                raise ValueError(f"the {name} map is not a permutation: semi-permutations and soft maps have no inverse")
        if self.attn_scales is not None or self.eps is not None:
            raise ValueError("a symmetry that sets eps or attn_scales has no inverse without the original values")
        return Symmetry(
            None if self.residual is None else self.residual.T,
            None if self.heads is None else UnitMap(self.heads.read.transpose(1, 2), self.heads.write.transpose(1, 2)),
            None if self.mlp is None else UnitMap(self.mlp.read.transpose(1, 2), self.mlp.write.transpose(1, 2)),
        )

    def to(self, *args, **kwargs) -> Symmetry:
        return Symmetry(None if self.residual is None else self.residual.to(*args, **kwargs),
                        None if self.heads is None else self.heads.to(*args, **kwargs),
                        None if self.mlp is None else self.mlp.to(*args, **kwargs),
                        eps=self.eps, attn_scales=self.attn_scales)


def _matmul(a: Tensor, b: Tensor) -> Tensor:
    dtype = torch.promote_types(a.dtype, b.dtype)
    return a.to(dtype) @ b.to(dtype)


def _is_permutation(m: Tensor) -> bool:
    return bool(((m == 0) | (m == 1)).all() and (m.sum(-1) == 1).all() and (m.sum(-2) == 1).all())


def permutation_matrix(perm: Tensor) -> Tensor:
    """Rows of the identity reordered: (P x)_j = x_{perm[j]}. Works on (..., N) index tensors."""
    n = perm.shape[-1]
    return torch.nn.functional.one_hot(perm, n).to(torch.float64)


# ---------------------------------------------------------------------------------------------
# The four classes as first-class objects: apply / inverse / compose (`then`) / random.
# ---------------------------------------------------------------------------------------------

@dataclass
class Permutation:
    """Permutations of whole heads and of MLP hidden units, per layer (and, for the paper's
    permutation-only ablation, of the residual stream). Index tensors: slot j of layer l holds
    original unit `heads[l, j]`."""

    heads: Tensor | None = None  # (L, H) long
    mlp: Tensor | None = None  # (L, m) long
    residual: Tensor | None = None  # (d,) long: new channel j is old channel residual[j]

    def to_symmetry(self) -> Symmetry:
        def units(idx: Tensor | None) -> UnitMap | None:
            if idx is None:
                return None
            p = permutation_matrix(idx)
            return UnitMap(p, p)

        # x O with O[i, j] = 1 where i = residual[j] moves old channel residual[j] to slot j.
        res = None if self.residual is None else permutation_matrix(self.residual).T
        return Symmetry(res, units(self.heads), units(self.mlp))

    def apply(self, model: CanonicalTransformer) -> CanonicalTransformer:
        return self.to_symmetry().apply(model)

    def inverse(self) -> Permutation:
        def inv(idx: Tensor | None) -> Tensor | None:
            return None if idx is None else torch.argsort(idx, dim=-1)
        return Permutation(inv(self.heads), inv(self.mlp), inv(self.residual))

    def then(self, other: Permutation) -> Permutation:
        """Self, then other: slot j after both holds self's slot other[j]."""
        def comp(a: Tensor | None, b: Tensor | None) -> Tensor | None:
            if a is None or b is None:
                return b if a is None else a
            return torch.gather(a, -1, b)
        return Permutation(comp(self.heads, other.heads), comp(self.mlp, other.mlp), comp(self.residual, other.residual))

    @staticmethod
    def random(config: CanonicalConfig, generator: torch.Generator | None = None, *, residual: bool = False) -> Permutation:
        def perms(rows: int, n: int) -> Tensor:
            return torch.stack([torch.randperm(n, generator=generator) for _ in range(rows)])
        return Permutation(
            heads=perms(config.depth, config.num_heads),
            mlp=perms(config.depth, config.mlp_width),
            residual=perms(1, config.width)[0] if residual else None,
        )


@dataclass
class SemiPermutation:
    """Semi-permutations N -> M (M ≥ N): slot j of layer l holds a copy of original unit
    `source[l, j]` with weight `weight[l, j]` (the weights of each original's copies sum to 1;
    source -1 marks an empty slot). Heads: copies share QK, OV is scaled by the weight.
    MLP units: `mlp_split="output"` scales the output weights (exact for any activation);
    `"input"` scales the input weights and bias, the paper's form, exact for ReLU only."""

    heads: tuple[Tensor, Tensor] | None = None  # (source (L, M) long, weight (L, M))
    mlp: tuple[Tensor, Tensor] | None = None
    mlp_split: str = "output"

    @staticmethod
    def _maps(source: Tensor, weight: Tensor, n: int) -> tuple[Tensor, Tensor]:
        pattern = torch.nn.functional.one_hot(source.clamp(min=0), n).to(torch.float64)
        pattern = pattern * (source >= 0).unsqueeze(-1)
        return pattern, pattern * weight.to(torch.float64).unsqueeze(-1)

    def to_symmetry(self, config: CanonicalConfig) -> Symmetry:
        heads = mlp = None
        if self.heads is not None:
            pattern, weighted = self._maps(*self.heads, config.num_heads)
            heads = UnitMap(read=pattern, write=weighted)
        if self.mlp is not None:
            pattern, weighted = self._maps(*self.mlp, config.mlp_width)
            if self.mlp_split == "output":
                mlp = UnitMap(read=pattern, write=weighted)
            elif self.mlp_split == "input":
                if config.activation != "relu":
                    raise ValueError(
                        f"mlp_split='input' scales the units' inputs, which is exact only for ReLU "
                        f"(positively homogeneous); this model uses {config.activation}. Use mlp_split='output'.")
                mlp = UnitMap(read=weighted, write=pattern)
            else:
                raise ValueError(f"mlp_split must be 'output' or 'input', got {self.mlp_split!r}")
        return Symmetry(None, heads, mlp)

    def apply(self, model: CanonicalTransformer) -> CanonicalTransformer:
        return self.to_symmetry(model.config).apply(model)

    def inverse(self) -> None:
        raise ValueError("a semi-permutation maps N units to M ≥ N and has no inverse; "
                         "it is undone only up to merging copies")

    @staticmethod
    def random(config: CanonicalConfig, num_heads: int | None = None, mlp_width: int | None = None,
               generator: torch.Generator | None = None, mlp_split: str = "output") -> SemiPermutation:
        """Every original kept at least once; the extra slots copy random originals; copy weights
        drawn uniformly then normalised per original; slots shuffled."""
        def draw(n: int, m: int) -> tuple[Tensor, Tensor]:
            if m < n:
                raise ValueError(f"a semi-permutation goes from N to M ≥ N units, got N={n}, M={m}")
            sources, weights = [], []
            for _ in range(config.depth):
                src = torch.cat([torch.arange(n), torch.randint(0, n, (m - n,), generator=generator)])
                src = src[torch.randperm(m, generator=generator)]
                w = torch.rand(m, generator=generator, dtype=torch.float64) + 0.1
                total = torch.zeros(n, dtype=torch.float64).index_add_(0, src, w)
                sources.append(src)
                weights.append(w / total[src])
            return torch.stack(sources), torch.stack(weights)
        return SemiPermutation(
            heads=None if num_heads is None else draw(config.num_heads, num_heads),
            mlp=None if mlp_width is None else draw(config.mlp_width, mlp_width),
            mlp_split=mlp_split,
        )


@dataclass
class Orthogonal:
    """One map of the residual stream, O ∈ R^{N×M} with O Oᵀ = I_N: square (a rotation or
    reflection of the stream) or rectangular (a width lift N -> M, exact with c = sqrt(N/M))."""

    matrix: Tensor

    def __post_init__(self) -> None:
        n, m = self.matrix.shape
        if m < n:
            raise ValueError(f"an orthogonal residual map goes from N to M ≥ N, got {n}x{m}")
        gram = self.matrix.double() @ self.matrix.double().T
        err = (gram - torch.eye(n, dtype=torch.float64, device=gram.device)).abs().max().item()
        tol = 1e-4 if self.matrix.dtype in (torch.float32, torch.bfloat16, torch.float16) else 1e-9
        if err > tol:
            raise ValueError(f"O Oᵀ differs from the identity by {err:.2e}: the matrix is not (semi-)orthogonal")

    def to_symmetry(self) -> Symmetry:
        return Symmetry(residual=self.matrix)

    def apply(self, model: CanonicalTransformer) -> CanonicalTransformer:
        return self.to_symmetry().apply(model)

    def inverse(self) -> Orthogonal:
        if self.matrix.shape[0] != self.matrix.shape[1]:
            raise ValueError("a width lift has no inverse")
        return Orthogonal(self.matrix.T)

    def then(self, other: Orthogonal) -> Orthogonal:
        return Orthogonal(self.matrix @ other.matrix)

    @staticmethod
    def random(width: int, new_width: int | None = None, generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float64) -> Orthogonal:
        """Haar-distributed (semi-)orthogonal N x M matrix via QR with the sign fix."""
        m = new_width or width
        if m < width:
            raise ValueError(f"new_width {m} is smaller than width {width}")
        g = torch.randn(m, width, generator=generator, dtype=torch.float64)
        q, r = torch.linalg.qr(g)
        q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
        return Orthogonal(q.T.contiguous().to(dtype))


@dataclass
class Invertible:
    """Per-head invertible maps on the *original* model: W_Q,i -> W_Q,i A_i, W_K,i -> W_K,i A_i^-T
    (biases alike), W_V,i -> W_V,i B_i, W_O,i -> B_i^-1 W_O,i. QK_i and OV_i are unchanged, so
    canonicalisation absorbs the class exactly. `qk` and `ov` are (L, H, dh, dh)."""

    qk: Tensor
    ov: Tensor

    def apply(self, model: nn.Module) -> nn.Module:
        """A transformed copy of a raw model (timm ViT, HF GPT-2, or any registered adapter).
        On a canonical model the class is the identity, and the model is returned unchanged."""
        if isinstance(model, CanonicalTransformer):
            return model
        from .adapters import adapter_for  # adapters import this module's siblings

        adapter = adapter_for(model)
        out = copy.deepcopy(model)
        for layer in range(adapter.num_layers(model)):
            w = adapter.get_attention(model, layer)
            a = self.qk[layer].to(w.q_w)
            b = self.ov[layer].to(w.q_w)
            a_inv_t = torch.linalg.inv(a).transpose(1, 2)
            w.q_w = torch.einsum("dhk,hkj->dhj", w.q_w, a)
            w.k_w = torch.einsum("dhk,hkj->dhj", w.k_w, a_inv_t)
            w.v_w = torch.einsum("dhk,hkj->dhj", w.v_w, b)
            w.o_w = torch.linalg.inv(b) @ w.o_w
            if w.q_b is not None:
                w.q_b = torch.einsum("hk,hkj->hj", w.q_b, a)
                w.k_b = torch.einsum("hk,hkj->hj", w.k_b, a_inv_t)
                w.v_b = torch.einsum("hk,hkj->hj", w.v_b, b)
            adapter.set_attention(out, layer, w)
        return out

    def inverse(self) -> Invertible:
        return Invertible(torch.linalg.inv(self.qk), torch.linalg.inv(self.ov))

    def then(self, other: Invertible) -> Invertible:
        return Invertible(self.qk @ other.qk, self.ov @ other.ov)

    @staticmethod
    def random(depth: int, num_heads: int, head_dim: int, generator: torch.Generator | None = None,
               condition: float = 4.0) -> Invertible:
        """Q1 diag(s) Q2 with Haar Q's and s log-uniform in [1/sqrt(condition), sqrt(condition)]:
        far from orthogonal, yet well conditioned."""
        def draw() -> Tensor:
            shape = (depth, num_heads, head_dim, head_dim)
            q1 = torch.linalg.qr(torch.randn(shape, generator=generator, dtype=torch.float64))[0]
            q2 = torch.linalg.qr(torch.randn(shape, generator=generator, dtype=torch.float64))[0]
            log_s = (torch.rand(depth, num_heads, head_dim, generator=generator, dtype=torch.float64) - 0.5)
            s = torch.exp(log_s * math.log(condition))
            return q1 @ torch.diag_embed(s) @ q2
        return Invertible(draw(), draw())
