"""Export: canonical (and aligned) models back into timm / HF models with the same function."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from helpers import (
    TOL,
    gpt2_ids,
    make_gpt2,
    make_vit,
    max_dev,
    raw_logits,
    single_thread,  # noqa: F401  (autouse fixture)
    vit_images,
)
from safetensors.torch import load_file, save_file
from transformers import GPT2LMHeadModel

import lmc_core as lmc
from lmc_core.adapters import UnsupportedModelError, adapter_for
from lmc_core.adapters.exporting import NotRepresentableError, export
from lmc_core.alignment.solvers import fix_ones, procrustes

F32 = TOL[torch.float32]


def _pair(arch: str, **kwargs):
    make = make_vit if arch == "vit" else make_gpt2
    a, b = make(seed=0, **kwargs), make(seed=1, **kwargs)
    x = vit_images(a, batch=4) if arch == "vit" else gpt2_ids(a, batch=3)
    return a, b, x


def _batches(arch: str, x: torch.Tensor) -> list:
    targets = None if arch == "gpt2" else torch.arange(len(x)) % 5
    return [(x, targets)] * 3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("arch", "kwargs"), [
    ("vit", {}),
    ("vit", {"qkv_bias": False, "proj_bias": False}),
    ("vit", {"global_pool": "avg", "fc_norm": True, "reg_tokens": 2}),
    ("vit", {"no_embed_class": True, "reg_tokens": 1, "pos_embed": "none"}),
    ("gpt2", {}),
    ("gpt2", {"tied": False, "scale_inv_layer": True}),
    ("gpt2", {"scale_attn_weights": False, "act": "relu"}),
])
def test_canonical_round_trip(arch, kwargs, dtype):
    """canonicalize -> export gives a model of the original class with the original function."""
    model, _, x = _pair(arch, **kwargs, dtype=dtype)
    exported = export(lmc.canonicalize(model), like=model)
    assert type(exported) is type(model)
    assert max_dev(raw_logits(exported, x), raw_logits(model, x)) < TOL[dtype]


@pytest.mark.parametrize("arch", ["vit", "gpt2"])
@pytest.mark.parametrize("method", ["weight_matching", "learned_matching"])
def test_aligned_export(arch, method):
    """With keep_centred the residual map fixes the all-ones direction (and really rotates the
    rest), and the exported B' computes aligned canonical B, hence B's own function."""
    a, b, x = _pair(arch)
    result = lmc.align(a, b, method, data=_batches(arch, x), keep_centred=True, iterations=3, epochs=1)
    O = result.symmetry.residual.double()
    d = O.shape[0]
    assert (torch.ones(1, d, dtype=O.dtype) @ O - 1).abs().max() < 1e-6
    assert (O @ O.T - torch.eye(d, dtype=O.dtype)).abs().max() < 1e-5
    assert (O - torch.eye(d, dtype=O.dtype)).norm() > 0.5  # a rotation, not the identity
    exported = export(result.model_b, like=b)
    assert max_dev(raw_logits(exported, x), result.model_b(x)) < F32
    assert max_dev(raw_logits(exported, x), raw_logits(b, x)) < F32


def test_align_many_keep_centred_exports_every_model():
    """Universe matching + learned refinement with keep_centred: every model exports to its own function."""
    models = [make_gpt2(seed=s) for s in range(3)]
    x = gpt2_ids(models[0], batch=3)
    result = lmc.align_many(models, "learned_matching", data=_batches("gpt2", x), keep_centred=True, iterations=2,
                            universe_iterations=2, epochs=1)
    for model, aligned in zip(models, result.models, strict=True):
        assert max_dev(raw_logits(export(aligned, like=model), x), raw_logits(model, x)) < F32


def test_fix_ones_is_the_restricted_procrustes_optimum():
    """fix_ones(procrustes, C) is orthogonal, fixes 1, and beats every other such map on tr(Oᵀ C)."""
    g = torch.Generator().manual_seed(0)
    d = 7
    cross = torch.randn(d, d, generator=g, dtype=torch.float64)
    best = fix_ones(procrustes, cross)
    assert (best @ best.T - torch.eye(d, dtype=torch.float64)).abs().max() < 1e-12
    assert (torch.ones(d, dtype=torch.float64) @ best - 1).abs().max() < 1e-12
    for _ in range(20):  # random maps of the same kind: the projection of random matrices
        other = fix_ones(procrustes, torch.randn(d, d, generator=g, dtype=torch.float64))
        assert torch.trace(other.T @ cross) <= torch.trace(best.T @ cross) + 1e-12


def test_hf_save_pretrained_round_trip(tmp_path):
    """An exported (untied) GPT-2 survives save_pretrained / from_pretrained with its logits."""
    a, b, x = _pair("gpt2")  # tied heads: the export unties them
    result = lmc.align(a, b, "weight_matching", keep_centred=True, iterations=3)
    exported = export(result.model_b, like=b)
    exported.save_pretrained(tmp_path)
    loaded = GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    assert loaded.lm_head.weight.data_ptr() != loaded.transformer.wte.weight.data_ptr()
    assert max_dev(raw_logits(loaded, x), result.model_b(x)) < F32


def test_timm_safetensors_round_trip(tmp_path):
    """An exported ViT's state dict survives safetensors save / load into a fresh model."""
    a, b, x = _pair("vit")
    result = lmc.align(a, b, "weight_matching", keep_centred=True, iterations=3)
    exported = export(result.model_b, like=b)
    save_file(exported.state_dict(), str(tmp_path / "model.safetensors"))
    fresh = make_vit(seed=5)
    fresh.load_state_dict(load_file(str(tmp_path / "model.safetensors")))
    assert max_dev(raw_logits(fresh, x), result.model_b(x)) < F32


@pytest.mark.parametrize("arch", ["vit", "gpt2"])
def test_not_representable(arch):
    """A merged midpoint (circuit rank > head_dim) and an uncentred rotation raise clear errors."""
    a, b, _ = _pair(arch)
    centred = lmc.align(a, b, "weight_matching", keep_centred=True, iterations=3)
    midpoint = lmc.interpolate(centred.model_a, centred.model_b, 0.5)
    with pytest.raises(NotRepresentableError, match="rank above head_dim"):
        export(midpoint, like=a)
    rotated = lmc.align(a, b, "weight_matching", iterations=3)
    with pytest.raises(NotRepresentableError, match="not centred.*keep_centred=True"):
        export(rotated.model_b, like=b)


def test_scales_and_eps_follow_like():
    """A GPT-2 without the 1/sqrt(head_dim) scale exports into one with it (and another eps):
    the circuits and the stream are rescaled exactly."""
    source = make_gpt2(scale_attn_weights=False, eps=1e-3, seed=2)
    like = make_gpt2(eps=1e-5, seed=3)
    x = gpt2_ids(source)
    exported = export(lmc.canonicalize(source), like=like)
    assert exported.config.layer_norm_epsilon == 1e-5
    assert max_dev(raw_logits(exported, x), raw_logits(source, x)) < F32


def test_structure_and_missing_parameters():
    """Another shape, or query biases into a ViT without qkv biases: clear errors."""
    model = make_vit()
    with pytest.raises(NotRepresentableError, match="mlp_width"):
        export(lmc.canonicalize(model), like=make_vit(mlp_ratio=3.0))
    with pytest.raises(UnsupportedModelError, match="qkv bias is nonzero"):
        export(lmc.canonicalize(model), like=make_vit(qkv_bias=False))


@pytest.mark.parametrize("proj_bias", [True, False])
def test_vit_write_inverts_read_without_qkv_bias(proj_bias):
    """write(like, read(model)) for a ViT with qkv_bias=False (read gives None query/key/value
    biases) is the model: the same logits, into a `like` with other weights."""
    model, like = make_vit(qkv_bias=False, proj_bias=proj_bias, seed=0), make_vit(qkv_bias=False, seed=1)
    x = vit_images(model)
    adapter = adapter_for(model)
    raw = adapter.read(model)
    assert raw.blocks[0].attn.q_b is None
    written = adapter.write(like, raw)
    assert max_dev(raw_logits(like, x), raw_logits(model, x)) > 0.1  # `like` really computes something else
    assert max_dev(raw_logits(written, x), raw_logits(model, x)) < 1e-6


def test_gpt2_write_takes_raw_weights_without_attention_biases():
    """GPT-2's write accepts None query/key/value biases (meaning zero): the result computes the
    model with its c_attn bias zeroed."""
    model, like = make_gpt2(seed=0), make_gpt2(seed=1)
    x = gpt2_ids(model)
    adapter = adapter_for(model)
    raw = adapter.read(model)
    for block in raw.blocks:
        block.attn = dataclasses.replace(block.attn, q_b=None, k_b=None, v_b=None)
    written = adapter.write(like, raw)
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for block in reference.transformer.h:
            block.attn.c_attn.bias.zero_()
    assert max_dev(raw_logits(reference, x), raw_logits(model, x)) > 1e-3  # the biases mattered
    assert max_dev(raw_logits(written, x), raw_logits(reference, x)) < 1e-6
