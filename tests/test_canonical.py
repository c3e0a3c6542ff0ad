"""The canonical form (SPEC section 2): function preservation, centring, structure, errors."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from helpers import (
    DTYPES,
    TOL,
    fast_settings,
    gpt2_ids,
    gpt2_kwargs,
    make_gpt2,
    make_model,
    make_vit,
    max_dev,
    raw_logits,
    single_thread,  # noqa: F401  (autouse fixture)
    vit_images,
    vit_kwargs,
)
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import lmc_core
from lmc_core import CanonicalTransformer, UnsupportedModelError, canonical_forward, canonicalize

# Parameters that write into the residual stream: their last (residual) axis must be centred.
WRITERS = ("patch_embed", "patch_bias", "pos_embed", "prefix", "token_embed", "ov", "attn_bias", "mlp_out",
           "mlp_out_bias")
GPT2_ACT = {"gelu": "gelu", "gelu_new": "gelu_tanh", "relu": "relu"}


def assert_centred(params: dict[str, torch.Tensor], dtype: torch.dtype) -> None:
    rel = 1e-6 if dtype == torch.float32 else 1e-14
    for name in WRITERS:
        if name not in params or params[name].numel() == 0:
            continue
        value = params[name].detach()
        scale = value.abs().max().item() + 1e-30
        err = value.mean(-1).abs().max().item()
        assert err <= rel * scale, f"{name} is not centred: max |mean| {err:.3e} vs max |value| {scale:.3e}"


def canonical_logits(model: CanonicalTransformer, inputs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(inputs)


# -- 1. function preservation over random configurations -----------------------------------------

@fast_settings(60)
@given(kw=vit_kwargs(), dtype=st.sampled_from(DTYPES), batch=st.integers(1, 3))
def test_vit_canonical_logits_match(kw, dtype, batch):
    model = make_vit(**kw, dtype=dtype)
    images = vit_images(model, batch=batch, seed=kw["seed"] + 1)
    canon = canonicalize(model)
    ref = raw_logits(model, images)
    assert ref.shape == (batch, kw["num_classes"])
    out = canonical_logits(canon, images)
    assert out.dtype == dtype
    assert max_dev(ref, out) <= TOL[dtype]

    cfg = canon.config
    assert (cfg.task, cfg.depth, cfg.width, cfg.num_heads, cfg.causal) == ("image", kw["depth"], kw["width"], kw["heads"], False)
    assert cfg.mlp_width == model.blocks[0].mlp.fc1.out_features
    assert cfg.eps == kw["eps"] and cfg.activation == kw["act"] and cfg.num_outputs == kw["num_classes"]
    assert cfg.num_prefix == int(kw["class_token"]) + kw["reg_tokens"]
    assert cfg.pool == kw["global_pool"] and cfg.in_chans == kw["in_chans"] and cfg.img_size == kw["img_size"]
    fc_norm = kw["fc_norm"] if kw["fc_norm"] is not None else kw["global_pool"] == "avg"
    assert cfg.norm_after_pool == fc_norm
    dh = kw["width"] // kw["heads"]
    assert all(math.isclose(s, dh**-0.5) for s in cfg.attn_scales)
    assert (canon.depth, canon.width, canon.num_heads, canon.mlp_width, canon.eps, canon.activation) == (
        cfg.depth, cfg.width, cfg.num_heads, cfg.mlp_width, cfg.eps, cfg.activation)
    params = canon.params()
    assert list(params) == list(lmc_core.canonical.param_names("image"))
    assert {k: tuple(v.shape) for k, v in params.items()} == cfg.param_shapes()
    assert all(v.dtype == dtype for v in params.values())
    assert_centred(params, dtype)


@fast_settings(60)
@given(kw=gpt2_kwargs(), dtype=st.sampled_from(DTYPES), data=st.data())
def test_gpt2_canonical_logits_match(kw, dtype, data):
    model = make_gpt2(**kw, dtype=dtype)
    length = data.draw(st.integers(1, kw["n_positions"]), label="length")
    ids = gpt2_ids(model, batch=2, length=length, seed=kw["seed"] + 1)
    canon = canonicalize(model)
    ref = raw_logits(model, ids)
    assert ref.shape == (2, length, kw["vocab"])
    out = canonical_logits(canon, ids)
    assert out.dtype == dtype
    assert max_dev(ref, out) <= TOL[dtype]

    cfg = canon.config
    assert (cfg.task, cfg.depth, cfg.width, cfg.num_heads, cfg.causal) == ("text", kw["depth"], kw["width"], kw["heads"], True)
    assert cfg.mlp_width == (kw["n_inner"] or 4 * kw["width"])
    assert cfg.eps == kw["eps"] and cfg.activation == GPT2_ACT[kw["act"]] and cfg.num_outputs == kw["vocab"]
    assert cfg.max_positions == kw["n_positions"]
    dh = kw["width"] // kw["heads"]
    for i, s in enumerate(cfg.attn_scales):
        expected = (dh**-0.5 if kw["scale_attn_weights"] else 1.0) / (i + 1 if kw["scale_inv_layer"] else 1)
        assert math.isclose(s, expected, rel_tol=1e-12)
    params = canon.params()
    assert list(params) == list(lmc_core.canonical.param_names("text"))
    assert {k: tuple(v.shape) for k, v in params.items()} == cfg.param_shapes()
    assert_centred(params, dtype)


def test_fold_is_the_spec_rewrite_on_gpt2():
    """Spot-check the formulas themselves (fp64): centring M = I - 11ᵀ/d on writers, γ folded
    into readers, offsets β/γ, QK / OV circuit products on the bias-augmented input."""
    model = make_gpt2(depth=1, width=12, heads=3, dtype=torch.float64, seed=5)
    p = canonicalize(model).params()
    t = model.transformer
    d = 12
    M = torch.eye(d, dtype=torch.float64) - 1.0 / d
    torch.testing.assert_close(p["token_embed"], t.wte.weight.detach() @ M, rtol=0, atol=1e-14)
    torch.testing.assert_close(p["pos_embed"], t.wpe.weight.detach() @ M, rtol=0, atol=1e-14)
    ln1, ln2, lnf = t.h[0].ln_1, t.h[0].ln_2, t.ln_f
    torch.testing.assert_close(p["norm1"][0], ln1.bias.detach() / ln1.weight.detach(), rtol=1e-14, atol=0)
    torch.testing.assert_close(p["norm2"][0], ln2.bias.detach() / ln2.weight.detach(), rtol=1e-14, atol=0)
    torch.testing.assert_close(p["norm_final"], lnf.bias.detach() / lnf.weight.detach(), rtol=1e-14, atol=0)
    torch.testing.assert_close(p["mlp_in"][0], ln2.weight.detach()[:, None] * t.h[0].mlp.c_fc.weight.detach(),
                               rtol=1e-14, atol=0)
    torch.testing.assert_close(p["head"], lnf.weight.detach()[:, None] * t.wte.weight.detach().T, rtol=1e-14, atol=0)
    # head 1's circuits from the raw Conv1D weights
    W = t.h[0].attn.c_attn.weight.detach()  # (d, 3d)
    b = t.h[0].attn.c_attn.bias.detach()
    g = ln1.weight.detach()[:, None]
    h, dh = 1, 4

    def aug(k: int) -> torch.Tensor:
        cols = slice(k * d + h * dh, k * d + (h + 1) * dh)
        return torch.cat([g * W[:, cols], b[cols][None]], dim=0)

    torch.testing.assert_close(p["qk"][0, h], aug(0) @ aug(1).T, rtol=0, atol=1e-13)
    Wo = t.h[0].attn.c_proj.weight.detach()[h * dh:(h + 1) * dh]
    torch.testing.assert_close(p["ov"][0, h], aug(2) @ Wo @ M, rtol=0, atol=1e-13)


# -- tied / untied heads ---------------------------------------------------------------------------

@pytest.mark.parametrize("tied", [True, False])
def test_gpt2_head_is_untied_in_canonical_form(tied):
    model = make_gpt2(tied=tied, dtype=torch.float64, seed=3)
    assert (model.lm_head.weight is model.transformer.wte.weight) == tied
    canon = canonicalize(model)
    p = canon.params()
    # the centred embedding and the γ-scaled head are different tensors with different values
    assert p["head"].data_ptr() != p["token_embed"].data_ptr()
    assert max_dev(p["head"].T, p["token_embed"]) > 1e-2
    # editing the canonical head leaves the embedding and the raw model alone
    before_embed = p["token_embed"].detach().clone()
    before_raw = model.transformer.wte.weight.detach().clone()
    with torch.no_grad():
        canon.head.add_(1.0)
    assert torch.equal(canon.token_embed.detach(), before_embed)
    assert torch.equal(model.transformer.wte.weight.detach(), before_raw)


# -- dtype / device moves, ensemble forward, with_params -------------------------------------------

@pytest.mark.parametrize("arch", ["vit", "gpt2"])
def test_to_float64_and_device_moves(arch):
    kw = dict(depth=2, width=16, heads=2, seed=11)
    model32, inputs = make_model(arch, kw, torch.float32)
    canon = canonicalize(model32)
    model64 = copy.deepcopy(model32).double()
    canon64 = canon.to(torch.float64)
    assert all(v.dtype == torch.float64 for v in canon64.params().values())
    assert canon64.config == canon.config
    ref64 = raw_logits(model64, inputs.double() if inputs.is_floating_point() else inputs)
    out64 = canonical_logits(canon64, inputs.double() if inputs.is_floating_point() else inputs)
    assert out64.dtype == torch.float64
    assert max_dev(ref64, out64) <= 1e-5  # fp32 rounding of the canonical weights only
    # canonicalising the fp64 model directly is exact to fp64 precision
    assert max_dev(ref64, canonical_logits(canonicalize(model64), inputs)) <= TOL[torch.float64]
    back = canon64.to(torch.float32)
    assert max_dev(canonical_logits(back, inputs), canonical_logits(canon, inputs)) <= 1e-6
    moved = canon.to("cpu")
    assert max_dev(canonical_logits(moved, inputs), raw_logits(model32, inputs)) <= TOL[torch.float32]
    # the meta device checks that the forward creates no tensor on a fixed device
    meta = copy.deepcopy(canon).to("meta")
    out = canonical_logits(meta, inputs.to("meta"))
    assert out.device.type == "meta" and out.shape == raw_logits(model32, inputs).shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("arch", ["vit", "gpt2"])
def test_cuda_round_trip(arch):
    model, inputs = make_model(arch, dict(depth=2, width=16, heads=2, seed=12), torch.float64)
    ref = raw_logits(model, inputs)
    canon_gpu = canonicalize(copy.deepcopy(model).cuda())
    assert canon_gpu.qk.is_cuda
    out = canonical_logits(canon_gpu, inputs.cuda())
    assert out.is_cuda and max_dev(out.cpu(), ref) <= 1e-9
    canon_cpu = canonicalize(model).cuda()
    assert max_dev(canonical_logits(canon_cpu, inputs.cuda()).cpu(), ref) <= 1e-9


@fast_settings(12)
@given(arch=st.sampled_from(["vit", "gpt2"]), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 1000),
       members=st.integers(1, 3))
def test_ensemble_forward_equals_member_forwards(arch, dtype, seed, members):
    kw = dict(depth=2, width=16, heads=2, seed=seed)
    models = [make_model(arch, {**kw, "seed": seed + i}, dtype) for i in range(members)]
    inputs = models[0][1]
    canons = [canonicalize(m) for m, _ in models]
    stacked = {k: torch.stack([c.params()[k].detach() for c in canons]) for k in canons[0].params()}
    with torch.no_grad():
        out = canonical_forward(stacked, canons[0].config, inputs)
    assert out.shape[0] == members
    for i, (model, _) in enumerate(models):
        single = canonical_logits(canons[i], inputs)
        assert out[i].shape == single.shape
        assert max_dev(out[i], single) <= TOL[dtype]
        assert max_dev(out[i], raw_logits(model, inputs)) <= TOL[dtype]


def test_ensemble_of_interpolations_is_linear_in_parameters():
    """The ensemble axis carries E different parameter sets (e.g. interpolation weights)."""
    (ma, x), (mb, _) = (make_model("gpt2", dict(seed=s), torch.float64) for s in (1, 2))
    pa, pb = canonicalize(ma).params(), canonicalize(mb).params()
    lams = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    stacked = {k: torch.stack([lam * pa[k].detach() + (1 - lam) * pb[k].detach() for lam in lams]) for k in pa}
    cfg = canonicalize(ma).config
    with torch.no_grad():
        out = canonical_forward(stacked, cfg, x)
        mid = canonical_forward({k: v[1] for k, v in stacked.items()}, cfg, x)
    assert max_dev(out[0], raw_logits(mb, x)) <= 1e-10
    assert max_dev(out[2], raw_logits(ma, x)) <= 1e-10
    assert max_dev(out[1], mid) <= 1e-10


def test_with_params_and_idempotence():
    model, x = make_model("vit", dict(seed=4), torch.float64)
    canon = canonicalize(model)
    assert canonicalize(canon) is canon
    params = {k: v.detach() * 1.0 for k, v in canon.params().items()}
    twin = canon.with_params(params)
    assert twin is not canon and twin.config == canon.config
    assert max_dev(canonical_logits(twin, x), canonical_logits(canon, x)) == 0.0
    params["head_bias"] = params["head_bias"] + 1.0
    shifted = canon.with_params(params)
    assert max_dev(canonical_logits(shifted, x), canonical_logits(canon, x) + 1.0) <= 1e-12
    # the canonical model's parameters are its own copies
    with torch.no_grad():
        canon.head_bias.add_(5.0)
    assert max_dev(canonical_logits(twin, x), raw_logits(model, x)) <= 1e-10


def test_canonicalize_does_not_touch_the_model():
    model = make_gpt2(seed=9)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    canonicalize(model)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_timm_string_activations_are_supported():
    """timm resolves act_layer="gelu" / "gelu_tanh" to its own GELU / GELUTanh modules (not
    nn.GELU); they compute F.gelu exactly, so the adapter should accept them."""
    for act in ("gelu", "gelu_tanh", "relu"):
        model = make_vit(act_layer=act, dtype=torch.float64, seed=2)
        x = vit_images(model)
        canon = canonicalize(model)
        assert canon.activation == ("relu" if act == "relu" else act)
        assert max_dev(canonical_logits(canon, x), raw_logits(model, x)) <= TOL[torch.float64]


# -- 4. clear errors -----------------------------------------------------------------------------------

def _vit_norms(model):
    return {"block norm1": model.blocks[0].norm1, "block norm2": model.blocks[-1].norm2, "final norm": model.norm}


def _gpt2_norms(model):
    t = model.transformer
    return {"block norm1": t.h[0].ln_1, "block norm2": t.h[-1].ln_2, "final norm": t.ln_f}


@pytest.mark.parametrize("arch", ["vit", "gpt2"])
@pytest.mark.parametrize("where", ["block norm1", "block norm2", "final norm"])
def test_zero_layernorm_scale_is_a_clear_error(arch, where):
    model = make_vit(seed=1) if arch == "vit" else make_gpt2(seed=1)
    norm = (_vit_norms if arch == "vit" else _gpt2_norms)(model)[where]
    with torch.no_grad():
        norm.weight[3] = 0.0
    with pytest.raises(ValueError, match="zero"):
        canonicalize(model)


def test_zero_fc_norm_scale_is_a_clear_error():
    model = make_vit(global_pool="avg", seed=1)
    assert isinstance(model.fc_norm, nn.LayerNorm)
    with torch.no_grad():
        model.fc_norm.weight[0] = 0.0
    with pytest.raises(ValueError, match="zero"):
        canonicalize(model)


def _vit_tensor(model, name):
    b = model.blocks[0]
    return {
        "patch_embed": model.patch_embed.proj.weight, "patch_bias": model.patch_embed.proj.bias,
        "pos_embed": model.pos_embed, "cls_token": model.cls_token, "qkv": b.attn.qkv.weight,
        "qkv_bias": b.attn.qkv.bias, "proj": b.attn.proj.weight, "proj_bias": b.attn.proj.bias,
        "fc1": b.mlp.fc1.weight, "fc1_bias": b.mlp.fc1.bias, "fc2": b.mlp.fc2.weight, "fc2_bias": b.mlp.fc2.bias,
        "ln_scale": b.norm1.weight, "ln_bias": b.norm2.bias, "head": model.head.weight, "head_bias": model.head.bias,
    }[name]


def _gpt2_tensor(model, name):
    t = model.transformer
    b = t.h[-1]
    return {
        "wte": t.wte.weight, "wpe": t.wpe.weight, "c_attn": b.attn.c_attn.weight, "c_attn_bias": b.attn.c_attn.bias,
        "c_proj": b.attn.c_proj.weight, "c_proj_bias": b.attn.c_proj.bias, "c_fc": b.mlp.c_fc.weight,
        "c_fc_bias": b.mlp.c_fc.bias, "mlp_proj": b.mlp.c_proj.weight, "mlp_proj_bias": b.mlp.c_proj.bias,
        "ln_scale": b.ln_1.weight, "ln_bias": t.ln_f.bias,
    }[name]


VIT_TENSORS = ["patch_embed", "patch_bias", "pos_embed", "cls_token", "qkv", "qkv_bias", "proj", "proj_bias", "fc1",
               "fc1_bias", "fc2", "fc2_bias", "ln_scale", "ln_bias", "head", "head_bias"]
GPT2_TENSORS = ["wte", "wpe", "c_attn", "c_attn_bias", "c_proj", "c_proj_bias", "c_fc", "c_fc_bias", "mlp_proj",
                "mlp_proj_bias", "ln_scale", "ln_bias"]


NON_FINITE_CASES = [(arch, name, float("nan") if i % 3 else float("inf"))
                    for i, (arch, name) in enumerate([("vit", n) for n in VIT_TENSORS] + [("gpt2", n) for n in GPT2_TENSORS])]


@pytest.mark.parametrize("case", NON_FINITE_CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}")
def test_non_finite_weights_are_a_clear_error(case):
    """NaN or inf anywhere (weights, biases, embeddings, norms) must be refused by name."""
    arch, name, bad = case
    model = make_vit(seed=1) if arch == "vit" else make_gpt2(seed=1, depth=1)
    tensor = (_vit_tensor if arch == "vit" else _gpt2_tensor)(model, name)
    with torch.no_grad():
        tensor.view(-1)[1] = bad
    with pytest.raises(ValueError, match="NaN"):
        canonicalize(model)


@pytest.mark.parametrize("which", ["head", "mlp", "norm", "attn", "embed"])
def test_mixed_dtypes_are_a_type_error(which):
    model = make_gpt2(depth=2, seed=1, tied=False)
    t = model.transformer
    {"head": model.lm_head, "mlp": t.h[1].mlp, "norm": t.h[0].ln_2, "attn": t.h[1].attn, "embed": t.wpe}[which].double()
    with pytest.raises(TypeError, match="dtype"):
        canonicalize(model)


def test_mixed_dtypes_vit_is_a_type_error():
    model = make_vit(seed=1)
    model.blocks[0].mlp.double()
    with pytest.raises(TypeError, match="dtype"):
        canonicalize(model)


UNSUPPORTED_VIT = {
    "layer scale": dict(init_values=1e-1),
    "qk_norm": dict(qk_norm=True),
    "map pooling": dict(global_pool="map"),
    "pre_norm": dict(pre_norm=True),
    "no final norm": dict(final_norm=False),
    "no head": dict(num_classes=0),
    "scale_attn_norm": dict(scale_attn_norm=True),
    "scale_mlp_norm": dict(scale_mlp_norm=True),
    "silu": dict(act="silu"),
    "max pooling": dict(global_pool="max", class_token=False),
    "pool_include_prefix": dict(global_pool="avg", pool_include_prefix=True),
}


@pytest.mark.parametrize("name", sorted(UNSUPPORTED_VIT))
def test_unsupported_vit_options(name):
    model = make_vit(**UNSUPPORTED_VIT[name], seed=1)
    with pytest.raises(UnsupportedModelError, match="not supported"):
        canonicalize(model)


@pytest.mark.parametrize("extra", [dict(act="silu"), dict(act="tanh"), dict(add_cross_attention=True)],
                         ids=["silu", "tanh", "cross-attention"])
def test_unsupported_gpt2_options(extra):
    model = make_gpt2(seed=1, **extra)
    with pytest.raises(UnsupportedModelError, match="not supported"):
        canonicalize(model)


@pytest.mark.parametrize("model", [nn.Linear(4, 4), nn.Sequential(nn.LayerNorm(4), nn.Linear(4, 2))],
                         ids=["linear", "sequential"])
def test_unknown_module_is_unsupported(model):
    with pytest.raises(UnsupportedModelError, match="no adapter"):
        canonicalize(model)
    assert issubclass(UnsupportedModelError, ValueError)


@pytest.mark.parametrize(
    "shape",
    [(2, 1, 8, 8), (2, 3, 8), (3, 8, 8), (2, 3, 12, 12), (2, 3, 4, 4), (2, 3, 12, 8), (2, 3, 8, 12), (2, 3, 9, 8)],
)
def test_wrong_image_shape_is_a_value_error(shape):
    model = make_vit(img_size=8, patch_size=4, in_chans=3, seed=1)
    canon = canonicalize(model)
    with pytest.raises(ValueError, match="expected images"):
        canon(torch.randn(*shape))


@pytest.mark.parametrize("shape", [(2, 11), (2, 3, 4), (5,)])
def test_wrong_token_shape_is_a_value_error(shape):
    model = make_gpt2(n_positions=10, seed=1)
    canon = canonicalize(model)
    with pytest.raises(ValueError, match="tokens|token ids"):
        canon(torch.zeros(shape, dtype=torch.long))


def test_canonical_transformer_checks_its_parameters():
    canon = canonicalize(make_gpt2(seed=1))
    params = {k: v.detach() for k, v in canon.params().items()}
    with pytest.raises(ValueError, match="missing"):
        CanonicalTransformer(canon.config, {k: v for k, v in params.items() if k != "qk"})
    with pytest.raises(ValueError, match="unexpected"):
        CanonicalTransformer(canon.config, {**params, "extra": params["qk"]})
    with pytest.raises(ValueError, match="shape"):
        CanonicalTransformer(canon.config, {**params, "ov": params["ov"][:, :, :-1]})
    with pytest.raises(TypeError, match="dtype"):
        CanonicalTransformer(canon.config, {**params, "head": params["head"].double()})


def test_token_ids_outside_the_vocabulary_are_refused():
    """Two stacked members share one embedding table in the forward: an id ≥ K would read the
    other member's row instead of failing."""
    canon = canonicalize(make_gpt2(seed=0))
    ids = torch.tensor([[1, 2, canon.config.num_outputs]])
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 23\)"):
        canonical_forward(canon.params(), canon.config, ids)
    with pytest.raises(ValueError, match="token ids must lie"):
        canonical_forward(canon.params(), canon.config, torch.tensor([[-1, 2]]))
