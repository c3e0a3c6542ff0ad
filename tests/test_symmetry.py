"""The four symmetry classes (SPEC section 3) and `Symmetry`: every class and random compositions
preserve the function; inverses round-trip; permutations really move weights; clear errors."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import (  # noqa: F401  (single_thread: autouse fixture)
    DTYPES,
    TOL,
    fast_settings,
    make_gpt2,
    make_model,
    make_vit,
    max_dev,
    model_cases,
    raw_logits,
    single_thread,
)
from hypothesis import given
from hypothesis import strategies as st

from lmc_core import (
    Invertible,
    Orthogonal,
    Permutation,
    SemiPermutation,
    Symmetry,
    UnitMap,
    canonicalize,
)
from lmc_core.adapters import adapter_for

PARAM_REL = {torch.float32: 1e-5, torch.float64: 1e-10}  # relative, on parameters after a round trip


def logits(model, inputs):
    with torch.no_grad():
        return model(inputs)


def setup(case):
    arch, kw, dtype = case
    model, inputs = make_model(arch, kw, dtype)
    canon = canonicalize(model)
    return model, inputs, canon, raw_logits(model, inputs), dtype


def rel_dev(a: dict, b: dict) -> float:
    """Largest parameter deviation, relative to the largest entry of that parameter."""
    out = 0.0
    for k in a:
        if b[k].numel() == 0:
            continue
        scale = b[k].detach().abs().max().item() + 1e-30
        out = max(out, max_dev(a[k], b[k]) / scale)
    return out


def same_structure(a, b) -> bool:
    """Configs equal up to float rounding of eps (exact equality is tested separately)."""
    return a.replace(eps=b.eps) == b and a.eps == pytest.approx(b.eps, rel=1e-12)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- reference implementation of a permutation by indexing (independent of the matrices) ---------

def permute_by_index(params: dict, perm: Permutation, depth: int) -> dict:
    d = params["norm1"].shape[1]
    r = perm.residual if perm.residual is not None else torch.arange(d)
    ra = torch.cat([r, torch.tensor([d])])
    L = range(depth)
    hp = perm.heads if perm.heads is not None else torch.arange(params["qk"].shape[1]).expand(depth, -1)
    mp = perm.mlp if perm.mlp is not None else torch.arange(params["mlp_in"].shape[2]).expand(depth, -1)
    out = {}
    for name, v in params.items():
        v = v.detach()
        if name == "qk":
            out[name] = torch.stack([v[l][hp[l]][:, ra][:, :, ra] for l in L])
        elif name == "ov":
            out[name] = torch.stack([v[l][hp[l]][:, ra][:, :, r] for l in L])
        elif name == "mlp_in":
            out[name] = torch.stack([v[l][r][:, mp[l]] for l in L])
        elif name == "mlp_in_bias":
            out[name] = torch.stack([v[l][mp[l]] for l in L])
        elif name == "mlp_out":
            out[name] = torch.stack([v[l][mp[l]][:, r] for l in L])
        elif name == "head":
            out[name] = v[r]
        elif name == "head_bias":
            out[name] = v
        else:  # every other parameter has the residual (or offset) axis last
            out[name] = v[..., r]
    return out


# -- permutations ----------------------------------------------------------------------------------

@fast_settings(30)
@given(case=model_cases(), residual=st.booleans(), seed=st.integers(0, 10**6))
def test_permutation_preserves_function_and_moves_weights(case, residual, seed):
    _, x, canon, ref, dtype = setup(case)
    perm = Permutation.random(canon.config, gen(seed), residual=residual)
    new = perm.apply(canon)
    assert same_structure(new.config, canon.config)
    assert max_dev(logits(new, x), ref) <= TOL[dtype]
    # the weights really moved, exactly as the index arithmetic says
    expected = permute_by_index(canon.params(), perm, canon.depth)
    for name, value in new.params().items():
        assert torch.equal(value.detach(), expected[name]), name
    identity_mlp = bool((perm.mlp == torch.arange(canon.mlp_width)).all())
    assert identity_mlp or not torch.equal(new.mlp_in.detach(), canon.mlp_in.detach())
    # inverse round trip is exact, through Permutation.inverse and Symmetry.inverse alike
    for back in (perm.inverse().apply(new), perm.to_symmetry().inverse().apply(new)):
        assert same_structure(back.config, canon.config)
        for name, value in back.params().items():
            assert torch.equal(value, canon.params()[name]), name


@pytest.mark.parametrize("arch", ["vit", "gpt2"])
def test_planted_permutation_moves_every_axis(arch):
    """A fixed non-identity permutation of heads, MLP units and residual channels: the
    parameters change (heads swapped, channels rolled) while the logits stay."""
    model, x = make_model(arch, dict(depth=2, width=24, heads=3, seed=21), torch.float64)
    canon = canonicalize(model)
    L, H, m, d = canon.depth, canon.num_heads, canon.mlp_width, canon.width
    perm = Permutation(
        heads=torch.tensor([[2, 0, 1], [1, 0, 2]]),
        mlp=torch.stack([torch.roll(torch.arange(m), 1), torch.flip(torch.arange(m), [0])]),
        residual=torch.roll(torch.arange(d), 5),
    )
    new = perm.apply(canon)
    assert max_dev(logits(new, x), raw_logits(model, x)) <= 1e-10
    for name in ("qk", "ov", "mlp_in", "mlp_out", "head", "norm1"):
        assert max_dev(new.params()[name], canon.params()[name]) > 1e-3, name
    # head 0 of layer 0 is now old head 2, with its residual axes rolled; the bias row stays last
    r = torch.roll(torch.arange(d), 5)
    torch.testing.assert_close(new.qk[0, 0, :d, :d], canon.qk[0, 2][r][:, r], rtol=0, atol=0)
    torch.testing.assert_close(new.qk[0, 0, d, d], canon.qk[0, 2, d, d], rtol=0, atol=0)
    torch.testing.assert_close(new.mlp_in[1, :, 0], canon.mlp_in[1][r][:, m - 1], rtol=0, atol=0)
    assert H == 3 and L == 2


@fast_settings(16)
@given(case=model_cases(dtypes=(torch.float64,)), seed=st.integers(0, 10**6))
def test_permutation_then_agrees_with_symmetry_then(case, seed):
    _, x, canon, ref, _ = setup(case)
    g = gen(seed)
    p1 = Permutation.random(canon.config, g, residual=True)
    p2 = Permutation.random(canon.config, g, residual=True)
    composed = p1.then(p2)
    s_perm, s_sym = composed.to_symmetry(), p1.to_symmetry().then(p2.to_symmetry())
    assert torch.equal(s_perm.residual, s_sym.residual)
    for part in ("heads", "mlp"):
        assert torch.equal(getattr(s_perm, part).read, getattr(s_sym, part).read)
        assert torch.equal(getattr(s_perm, part).write, getattr(s_sym, part).write)
    sequential = p2.apply(p1.apply(canon))
    for a in (composed.apply(canon), s_sym.apply(canon)):
        for name, value in a.params().items():
            assert torch.equal(value, sequential.params()[name]), name
    assert max_dev(logits(sequential, x), ref) <= 1e-10
    # p then its inverse is the identity permutation
    ident = p1.then(p1.inverse())
    assert torch.equal(ident.heads, torch.arange(canon.num_heads).expand_as(ident.heads))
    assert torch.equal(ident.mlp, torch.arange(canon.mlp_width).expand_as(ident.mlp))
    assert torch.equal(ident.residual, torch.arange(canon.width))


# -- orthogonal: square and width lift -------------------------------------------------------------

@fast_settings(30)
@given(case=model_cases(), seed=st.integers(0, 10**6))
def test_orthogonal_square_preserves_function_and_round_trips(case, seed):
    _, x, canon, ref, dtype = setup(case)
    O = Orthogonal.random(canon.width, generator=gen(seed), dtype=dtype)
    assert O.matrix.dtype == dtype
    new = O.apply(canon)
    assert same_structure(new.config, canon.config)
    assert max_dev(logits(new, x), ref) <= TOL[dtype]
    assert max_dev(new.qk, canon.qk) > 1e-3 and max_dev(new.head, canon.head) > 1e-3
    back = O.inverse().apply(new)
    assert rel_dev(back.params(), canon.params()) <= PARAM_REL[dtype]
    back_sym = O.to_symmetry().inverse().apply(new)
    assert rel_dev(back_sym.params(), canon.params()) <= PARAM_REL[dtype]
    # Orthogonal.then agrees with applying one after the other
    O2 = Orthogonal.random(canon.width, generator=gen(seed + 1), dtype=dtype)
    both = O.then(O2).apply(canon)
    assert rel_dev(both.params(), O2.apply(new).params()) <= 10 * PARAM_REL[dtype]
    assert max_dev(logits(both, x), ref) <= TOL[dtype]


@pytest.mark.parametrize("eps", [0.1, 1e-5, 0.3])
def test_square_orthogonal_keeps_the_config_exactly(eps):
    """A square O (c = 1) must not touch eps: N/M = 1, yet eps * N / M rounds 0.1 * 6 / 6 to
    0.10000000000000002, and repeated applications drift."""
    canon = canonicalize(make_gpt2(width=6, heads=2, eps=eps, dtype=torch.float64, seed=2))
    new = Orthogonal.random(6, generator=gen(0)).apply(canon)
    assert new.config == canon.config
    assert Permutation.random(canon.config, gen(0), residual=True).apply(canon).config == canon.config


@fast_settings(30)
@given(case=model_cases(), extra=st.integers(1, 9), seed=st.integers(0, 10**6))
def test_width_lift_computes_the_narrow_function(case, extra, seed):
    _, x, canon, ref, dtype = setup(case)
    N, M = canon.width, canon.width + extra
    O = Orthogonal.random(N, M, generator=gen(seed), dtype=dtype)
    assert O.matrix.shape == (N, M)
    lifted = O.apply(canon)
    assert lifted.width == M and lifted.config.width == M
    assert lifted.eps == pytest.approx(canon.eps * N / M, rel=1e-12)
    assert {k: tuple(v.shape) for k, v in lifted.params().items()} == lifted.config.param_shapes()
    narrow_out, lifted_out = logits(canon, x), logits(lifted, x)
    assert max_dev(lifted_out, narrow_out) <= TOL[dtype]
    assert max_dev(lifted_out, ref) <= TOL[dtype]
    # a second lift on top, and the two composed into one
    O2 = Orthogonal.random(M, M + 2, generator=gen(seed + 1), dtype=dtype)
    twice = O2.apply(lifted)
    once = O.then(O2).apply(canon)
    assert once.width == twice.width == M + 2
    assert once.eps == pytest.approx(twice.eps, rel=1e-12)
    assert rel_dev(once.params(), twice.params()) <= 10 * PARAM_REL[dtype]
    assert max_dev(logits(once, x), ref) <= TOL[dtype]
    with pytest.raises(ValueError, match="inverse"):
        O.inverse()
    with pytest.raises(ValueError, match="inverse"):
        O.to_symmetry().inverse()


@fast_settings(30)
@given(case=model_cases(), extra=st.integers(0, 9), seed=st.integers(0, 10**6),
       eps=st.floats(1e-6, 1e-1), scale=st.floats(0.2, 5.0))
def test_eps_and_softmax_scale_reparametrisations_keep_the_function(case, extra, seed, eps, scale):
    """The scalar targets a lift uses to share the wider model's config (any eps, any scale)."""
    _, x, canon, ref, dtype = setup(case)
    target_scales = tuple(a * scale for a in canon.config.attn_scales)
    lift = Orthogonal.random(canon.width, canon.width + extra, generator=gen(seed), dtype=dtype).to_symmetry()
    sym = Symmetry(lift.residual, eps=eps, attn_scales=target_scales)
    new = sym.apply(canon)
    assert new.eps == eps and new.config.attn_scales == target_scales  # exactly the targets
    assert max_dev(logits(new, x), ref) <= TOL[dtype]
    # composition: the later target wins; the composite equals one after the other
    later = Symmetry(eps=2 * eps)
    both = sym.then(later).apply(canon)
    assert both.eps == 2 * eps
    assert rel_dev(both.params(), later.apply(new).params()) <= 10 * PARAM_REL[dtype]
    with pytest.raises(ValueError, match="no inverse"):
        sym.inverse()
    with pytest.raises(ValueError, match="eps must be a positive"):
        Symmetry(eps=float("nan")).apply(canon)


# -- semi-permutations -------------------------------------------------------------------------------

def _with_act(case, act):
    arch, kw, dtype = case
    if arch == "gpt2":
        act = {"gelu_tanh": "gelu_new"}.get(act, act)
    return arch, {**kw, "act": act}, dtype


@fast_settings(40)
@given(case=model_cases(), act=st.sampled_from(["gelu", "gelu_tanh", "relu"]), split=st.sampled_from(["output", "input"]),
       extra_heads=st.integers(0, 3), extra_units=st.integers(0, 6), seed=st.integers(0, 10**6))
def test_semi_permutation_preserves_function(case, act, split, extra_heads, extra_units, seed):
    if split == "input":
        act = "relu"  # input split is exact for ReLU only (tested for GELU below)
    _, x, canon, ref, dtype = setup(_with_act(case, act))
    H, m = canon.num_heads, canon.mlp_width
    semi = SemiPermutation.random(canon.config, num_heads=H + extra_heads, mlp_width=m + extra_units,
                                  generator=gen(seed), mlp_split=split)
    new = semi.apply(canon)
    assert (new.num_heads, new.mlp_width, new.width) == (H + extra_heads, m + extra_units, canon.width)
    assert max_dev(logits(new, x), ref) <= TOL[dtype]
    # copies share QK; OV is scaled by the copy weight; weights of each original sum to one
    src, w = semi.heads
    for l in range(canon.depth):
        assert torch.equal(new.qk[l].detach(), canon.qk[l, src[l]].detach())
        torch.testing.assert_close(new.ov[l], canon.ov[l, src[l]] * w[l].to(dtype)[:, None, None],
                                   rtol=1e-6 if dtype == torch.float32 else 1e-14, atol=0)
        totals = torch.zeros(H, dtype=torch.float64).index_add_(0, src[l], w[l])
        torch.testing.assert_close(totals, torch.ones(H, dtype=torch.float64))
    with pytest.raises(ValueError, match="no inverse"):
        semi.inverse()
    if extra_heads or extra_units:
        with pytest.raises(ValueError, match="not a permutation"):
            semi.to_symmetry(canon.config).inverse()


def test_semi_permutation_with_empty_slots():
    """Source -1 marks an empty slot (zero QK and OV, zero MLP weights): it adds nothing."""
    model, x = make_model("gpt2", dict(heads=2, width=16, n_inner=12, depth=2, seed=4), torch.float64)
    canon = canonicalize(model)
    heads = (torch.tensor([[1, -1, 0], [-1, 0, 1]]), torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]))
    src = torch.tensor([list(range(12)) + [-1, 5], [-1] + list(range(12)) + [3]])
    w = torch.ones(2, 14, dtype=torch.float64)
    w[0, 5], w[0, 13], w[1, 4], w[1, 13] = 0.25, 0.75, 0.5, 0.5
    new = SemiPermutation(heads=heads, mlp=(src, w)).apply(canon)
    assert (new.num_heads, new.mlp_width) == (3, 14)
    assert new.qk[0, 1].abs().max() == 0 and new.ov[1, 0].abs().max() == 0
    assert max_dev(logits(new, x), raw_logits(model, x)) <= 1e-10


@pytest.mark.parametrize("arch", ["vit", "gpt2"])
@pytest.mark.parametrize("act", ["gelu", "gelu_tanh"])
def test_semi_permutation_input_split_needs_relu(arch, act):
    act = {"gelu_tanh": "gelu_new"}.get(act, act) if arch == "gpt2" else act
    model, _ = make_model(arch, dict(act=act, seed=3), torch.float64)
    canon = canonicalize(model)
    semi = SemiPermutation.random(canon.config, num_heads=canon.num_heads + 1, mlp_width=canon.mlp_width + 2,
                                  generator=gen(0), mlp_split="input")
    with pytest.raises(ValueError, match="ReLU"):
        semi.apply(canon)
    # the same split on the heads only (no MLP map) is fine for any activation
    semi_heads = SemiPermutation.random(canon.config, num_heads=canon.num_heads + 1, generator=gen(0), mlp_split="input")
    semi_heads.apply(canon)


def test_semi_permutation_input_split_is_wrong_for_gelu():
    """Planted: forcing the input split on a GELU MLP (bypassing the guard) changes the function,
    so the guard is not over-cautious and the test below it is not vacuous."""
    model, x = make_model("gpt2", dict(act="gelu", seed=3), torch.float64)
    canon = canonicalize(model)
    semi = SemiPermutation.random(canon.config, mlp_width=canon.mlp_width + 8, generator=gen(1), mlp_split="output")
    sym = semi.to_symmetry(canon.config)
    swapped = Symmetry(mlp=UnitMap(read=sym.mlp.write, write=sym.mlp.read))
    assert max_dev(logits(swapped.apply(canon), x), raw_logits(model, x)) > 1e-4
    assert max_dev(logits(sym.apply(canon), x), raw_logits(model, x)) <= 1e-10


# -- random compositions -------------------------------------------------------------------------------

def _random_step(kind: str, canon, g: torch.Generator) -> Symmetry:
    cfg, dtype = canon.config, canon.qk.dtype
    if kind == "perm":
        return Permutation.random(cfg, g).to_symmetry()
    if kind == "perm_res":
        return Permutation.random(cfg, g, residual=True).to_symmetry()
    if kind == "orth":
        return Orthogonal.random(cfg.width, generator=g, dtype=dtype).to_symmetry()
    if kind == "lift":
        return Orthogonal.random(cfg.width, cfg.width + 3, generator=g, dtype=dtype).to_symmetry()
    split = "input" if kind == "semi_in" else "output"
    return SemiPermutation.random(cfg, num_heads=cfg.num_heads + 1, mlp_width=cfg.mlp_width + 2, generator=g,
                                  mlp_split=split).to_symmetry(cfg)


@fast_settings(30)
@given(case=model_cases(), relu=st.booleans(),
       kinds=st.lists(st.sampled_from(["perm", "perm_res", "orth", "lift", "semi_out", "semi_in"]), min_size=2, max_size=4),
       seed=st.integers(0, 10**6))
def test_random_compositions_preserve_function(case, relu, kinds, seed):
    if relu:
        case = _with_act(case, "relu")
    else:
        kinds = [k for k in kinds if k != "semi_in"] or ["perm", "orth"]
    _, x, canon, ref, dtype = setup(case)
    g = gen(seed)
    steps, current = [], canon
    for kind in kinds:
        step = _random_step(kind, current, g)
        steps.append(step)
        current = step.apply(current)
        assert max_dev(logits(current, x), ref) <= TOL[dtype], kinds
    composite = steps[0]
    for step in steps[1:]:
        composite = composite.then(step)
    once = composite.apply(canon)
    assert once.config.replace(eps=current.eps) == current.config
    assert once.eps == pytest.approx(current.eps, rel=1e-12)
    assert rel_dev(once.params(), current.params()) <= 20 * PARAM_REL[dtype]
    assert max_dev(logits(once, x), ref) <= TOL[dtype]


def test_symmetry_parts_may_be_none_and_identity_is_exact():
    model, x = make_model("vit", dict(seed=6), torch.float64)
    canon = canonicalize(model)
    same = Symmetry().apply(canon)
    assert same is not canon and same.config == canon.config
    assert all(torch.equal(a, b) for a, b in zip(same.params().values(), canon.params().values(), strict=True))
    eye = Symmetry(residual=torch.eye(canon.width, dtype=torch.float64))
    assert rel_dev(eye.apply(canon).params(), canon.params()) == 0.0
    assert Symmetry().then(eye).residual is eye.residual
    assert eye.then(Symmetry()).residual is eye.residual


def test_apply_params_is_differentiable_in_the_matrices():
    model, x = make_model("gpt2", dict(seed=7), torch.float64)
    canon = canonicalize(model)
    O = Orthogonal.random(canon.width, generator=gen(0)).matrix.clone().requires_grad_(True)
    heads = torch.eye(canon.num_heads, dtype=torch.float64).expand(canon.depth, -1, -1).clone().requires_grad_(True)
    sym = Symmetry(residual=O, heads=UnitMap(heads, heads))
    params, cfg = sym.apply_params({k: v.detach() for k, v in canon.params().items()}, canon.config)
    from lmc_core import canonical_forward

    canonical_forward(params, cfg, x).pow(2).mean().backward()
    assert O.grad is not None and torch.isfinite(O.grad).all() and O.grad.abs().max() > 0
    assert heads.grad is not None and torch.isfinite(heads.grad).all() and heads.grad.abs().max() > 0


# -- device: the symmetry follows the model -----------------------------------------------------------

def test_symmetry_matrices_follow_the_model_device():
    """Symmetries are built on the CPU (Permutation.random, Orthogonal.random); applying one to
    a model on another device must work there. The meta device stands in for a GPU: it exposes
    a CPU matrix meeting parameters on another device (on CUDA that is a device error)."""
    canon = canonicalize(make_gpt2(seed=8))
    meta = copy.deepcopy(canon).to("meta")
    for sym in (Permutation.random(canon.config, gen(0), residual=True).to_symmetry(),
                Orthogonal.random(canon.width, canon.width + 2, generator=gen(0), dtype=torch.float32).to_symmetry()):
        out = sym.apply(meta)
        assert all(v.device.type == "meta" for v in out.params().values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_symmetries_on_cuda():
    model, x = make_model("gpt2", dict(seed=8), torch.float64)
    ref = raw_logits(model, x)
    canon = canonicalize(model).cuda()
    for sym in (Permutation.random(canon.config, gen(0), residual=True),
                Orthogonal.random(canon.width, canon.width + 2, generator=gen(0)),
                SemiPermutation.random(canon.config, num_heads=canon.num_heads + 1, generator=gen(0))):
        out = sym.apply(canon)
        assert out.qk.is_cuda and max_dev(logits(out, x.cuda()).cpu(), ref) <= 1e-10
    inv = Invertible.random(model.config.n_layer, model.config.n_head, model.config.n_embd // model.config.n_head,
                            generator=gen(0))
    moved = inv.apply(copy.deepcopy(model).cuda())
    assert max_dev(raw_logits(moved, x.cuda()).cpu(), ref) <= 1e-10


# -- invertible (acts on the raw model) ------------------------------------------------------------------

def _raw_attention(model):
    adapter = adapter_for(model)
    return [adapter.get_attention(model, l) for l in range(adapter.num_layers(model))]


@fast_settings(20)
@given(case=model_cases(), seed=st.integers(0, 10**6))
def test_invertible_changes_raw_weights_not_canonical_ones(case, seed):
    model, x, canon, ref, dtype = setup(case)
    arch = case[0]
    H = canon.num_heads
    inv = Invertible.random(canon.depth, H, canon.width // H, generator=gen(seed))
    before = copy.deepcopy(model.state_dict())
    new = inv.apply(model)
    assert new is not model
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # original untouched
    # raw attention weights change substantially ...
    for a, b in zip(_raw_attention(model), _raw_attention(new), strict=True):
        for name in ("q_w", "k_w", "v_w", "o_w"):
            old, changed = getattr(a, name), getattr(b, name)
            assert (changed - old).norm() > 0.1 * old.norm(), name
    # ... everything else is untouched
    attn_keys = ("attn.qkv", "attn.proj.weight") if arch == "vit" else ("attn.c_attn", "attn.c_proj.weight")
    for k, v in new.state_dict().items():
        if not any(s in k for s in attn_keys):
            assert torch.equal(v, before[k]), k
    # ... the raw logits and the canonical parameters do not
    assert max_dev(raw_logits(new, x), ref) <= TOL[dtype]
    new_canon = canonicalize(new)
    assert new_canon.config == canon.config
    rel = {torch.float32: 3e-6, torch.float64: 1e-10}[dtype]
    assert rel_dev(new_canon.params(), canon.params()) <= rel
    # inverse round trip on the raw model, and Invertible.then
    restored = inv.inverse().apply(new)
    for k, v in restored.state_dict().items():
        scale = before[k].abs().max().item() + 1e-30
        assert (v - before[k]).abs().max().item() <= 50 * rel * scale, k
    inv2 = Invertible.random(canon.depth, H, canon.width // H, generator=gen(seed + 1))
    both, seq = inv.then(inv2).apply(model), inv2.apply(new)
    for a, b in zip(_raw_attention(both), _raw_attention(seq), strict=True):
        for name in ("q_w", "k_w", "v_w", "o_w"):
            scale = getattr(b, name).abs().max().item()
            assert max_dev(getattr(a, name), getattr(b, name)) <= 50 * rel * scale


def test_invertible_on_canonical_is_identity_and_qkv_bias_free_vit():
    model = make_vit(qkv_bias=False, proj_bias=False, dtype=torch.float64, seed=13)
    canon = canonicalize(model)
    inv = Invertible.random(canon.depth, canon.num_heads, canon.width // canon.num_heads, generator=gen(2))
    assert inv.apply(canon) is canon
    new = inv.apply(model)
    assert new.blocks[0].attn.qkv.bias is None
    assert rel_dev(canonicalize(new).params(), canon.params()) <= 1e-10


def test_invertible_is_far_from_orthogonal():
    inv = Invertible.random(2, 3, 4, generator=gen(0))
    eye = torch.eye(4, dtype=torch.float64)
    for mats in (inv.qk, inv.ov):
        gram = mats @ mats.transpose(-1, -2)
        assert (gram - eye).abs().max() > 0.1
        assert torch.linalg.cond(mats).max() <= 4.0 + 1e-9


# -- clear errors ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_canon():
    return canonicalize(make_gpt2(depth=2, width=12, heads=3, n_inner=20, seed=1, dtype=torch.float64))


def test_residual_map_of_the_wrong_width(small_canon):
    d = small_canon.width
    for bad in (torch.eye(d + 1, dtype=torch.float64), torch.eye(d - 1, d, dtype=torch.float64)):
        with pytest.raises(ValueError, match="width"):
            Symmetry(residual=bad).apply(small_canon)
    with pytest.raises(ValueError, match="width"):
        Permutation(residual=torch.randperm(d + 1)).apply(small_canon)


def test_unit_maps_of_the_wrong_size(small_canon):
    L, H, m = small_canon.depth, small_canon.num_heads, small_canon.mlp_width

    def eye(n, layers=L):
        return torch.eye(n, dtype=torch.float64).expand(layers, -1, -1).clone()

    with pytest.raises(ValueError, match="head map"):
        Symmetry(heads=UnitMap(eye(H + 1), eye(H + 1))).apply(small_canon)
    with pytest.raises(ValueError, match="head map"):
        Symmetry(heads=UnitMap(eye(H, L + 1), eye(H, L + 1))).apply(small_canon)
    with pytest.raises(ValueError, match="MLP map"):
        Symmetry(mlp=UnitMap(eye(m - 1), eye(m - 1))).apply(small_canon)
    with pytest.raises(ValueError, match="MLP map"):
        Symmetry(mlp=UnitMap(eye(H), eye(H))).apply(small_canon)
    with pytest.raises(ValueError, match="head map"):
        Permutation(heads=torch.stack([torch.randperm(H + 1) for _ in range(L)])).apply(small_canon)
    with pytest.raises(ValueError, match="MLP map"):
        Permutation(mlp=torch.stack([torch.randperm(m) for _ in range(L + 1)])).apply(small_canon)
    with pytest.raises(ValueError, match="one shape"):
        UnitMap(eye(H), eye(H + 1))
    with pytest.raises(ValueError, match="one shape"):
        UnitMap(torch.eye(H), torch.eye(H))
    with pytest.raises(ValueError, match="M ≥ N"):
        SemiPermutation.random(small_canon.config, num_heads=H - 1, generator=gen(0))
    with pytest.raises(ValueError, match="mlp_split"):
        SemiPermutation.random(small_canon.config, mlp_width=m + 1, generator=gen(0), mlp_split="both").apply(small_canon)


def test_orthogonal_rejects_non_orthogonal_matrices():
    g = gen(0)
    with pytest.raises(ValueError, match="not \\(semi-\\)orthogonal"):
        Orthogonal(torch.randn(6, 6, generator=g, dtype=torch.float64))
    with pytest.raises(ValueError, match="not \\(semi-\\)orthogonal"):
        Orthogonal(2 * torch.eye(5))
    q = Orthogonal.random(6, generator=g).matrix
    with pytest.raises(ValueError, match="not \\(semi-\\)orthogonal"):
        Orthogonal(q + 1e-6)  # fp64 tolerance is tight
    Orthogonal((q + 1e-7).float())  # fp32 tolerance is looser
    with pytest.raises(ValueError, match="M ≥ N"):
        Orthogonal(torch.eye(6, dtype=torch.float64)[:, :4])
    with pytest.raises(ValueError, match="smaller"):
        Orthogonal.random(6, 4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_random_orthogonal_is_orthogonal(dtype):
    for n, m in ((7, 7), (7, 11)):
        O = Orthogonal.random(n, m, generator=gen(n + m), dtype=dtype).matrix
        assert O.dtype == dtype and O.shape == (n, m)
        gram = O.double() @ O.double().T
        assert (gram - torch.eye(n, dtype=torch.float64)).abs().max() <= (1e-6 if dtype == torch.float32 else 1e-13)


def test_lift_of_vit_with_every_readout():
    """Width lift on both pooling modes and both final-norm placements (exact, fp64)."""
    for kw in (dict(global_pool="token"), dict(global_pool="avg"), dict(global_pool="avg", fc_norm=False),
               dict(global_pool="token", fc_norm=True, reg_tokens=2)):
        model, x = make_model("vit", dict(seed=17, **kw), torch.float64)
        canon = canonicalize(model)
        lifted = Orthogonal.random(canon.width, canon.width + 5, generator=gen(1)).apply(canon)
        assert max_dev(logits(lifted, x), raw_logits(model, x)) <= 1e-10
