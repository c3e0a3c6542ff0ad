"""Small model factories and hypothesis strategies shared by the tests.

Every factory builds a tiny model from its class (never from a hub), then moves it away from
any initialisation symmetry: LayerNorm scales are drawn from ±U(0.5, 1.5) (random signs, never
near zero), LayerNorm biases and every other parameter (embeddings, class/register tokens,
biases that start at zero) are perturbed with Gaussian noise. The models are returned in eval
mode with all dropout off, in the dtype asked for.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from timm.models.vision_transformer import VisionTransformer  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.set_verbosity_error()

# Tolerances on logits (SPEC section 2, item 3).
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
DTYPES = (torch.float32, torch.float64)


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tiny models run fastest on one thread (and do not fight over a busy machine's cores).
    Import this fixture into a test module to make it autouse there; restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def fast_settings(max_examples: int) -> settings:
    """Deterministic hypothesis settings: derandomized, no example database, no deadline."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=True,
    )


# -- randomisation -----------------------------------------------------------------------------

@torch.no_grad()
def randomize_(model: nn.Module, seed: int, weight_std: float = 0.15, ln_bias_std: float = 0.3) -> nn.Module:
    """In place: LayerNorm γ ~ ±U(0.5, 1.5), β ~ N(0, ln_bias_std²); every other parameter
    gets N(0, weight_std²) noise added. Tied parameters are visited once."""
    g = torch.Generator().manual_seed(seed)
    seen: set[int] = set()
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            if module.weight is not None:
                w = module.weight
                mag = torch.rand(w.shape, generator=g, dtype=torch.float64) + 0.5
                sign = torch.randint(0, 2, w.shape, generator=g, dtype=torch.float64) * 2 - 1
                w.copy_((mag * sign).to(w.dtype))
                seen.add(id(w))
            if module.bias is not None:
                b = module.bias
                b.copy_((torch.randn(b.shape, generator=g, dtype=torch.float64) * ln_bias_std).to(b.dtype))
                seen.add(id(b))
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        p.add_((torch.randn(p.shape, generator=g, dtype=torch.float64) * weight_std).to(p.dtype))
    return model


# -- timm ViT ----------------------------------------------------------------------------------

VIT_ACTIVATIONS = {
    "gelu": nn.GELU,
    "gelu_tanh": functools.partial(nn.GELU, approximate="tanh"),
    "relu": nn.ReLU,
}


def make_vit(
    *,
    depth: int = 2,
    width: int = 24,
    heads: int = 2,
    mlp_ratio: float = 2.0,
    img_size: int = 8,
    patch_size: int = 4,
    in_chans: int = 3,
    num_classes: int = 5,
    global_pool: str = "token",
    class_token: bool = True,
    reg_tokens: int = 0,
    no_embed_class: bool = False,
    qkv_bias: bool = True,
    proj_bias: bool = True,
    fc_norm: bool | None = None,
    eps: float = 1e-6,
    act: str = "gelu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    **extra,
) -> VisionTransformer:
    """A tiny randomized timm VisionTransformer (eval mode). `extra` goes to the constructor."""
    act_layer = extra.pop("act_layer", VIT_ACTIVATIONS.get(act, act))  # act_layer: passed to timm as is
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VisionTransformer(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, num_classes=num_classes,
            global_pool=global_pool, embed_dim=width, depth=depth, num_heads=heads, mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias, proj_bias=proj_bias, class_token=class_token, reg_tokens=reg_tokens,
            no_embed_class=no_embed_class, fc_norm=fc_norm,
            norm_layer=functools.partial(nn.LayerNorm, eps=eps), act_layer=act_layer, **extra,
        )
    randomize_(model, seed)
    return model.to(dtype).eval()


def vit_images(model: VisionTransformer, batch: int = 3, seed: int = 1) -> torch.Tensor:
    pe = model.patch_embed
    g = torch.Generator().manual_seed(seed)
    dtype = pe.proj.weight.dtype
    return torch.randn(batch, pe.proj.in_channels, *pe.img_size, generator=g, dtype=torch.float64).to(dtype)


@st.composite
def vit_kwargs(draw) -> dict:
    """Random tiny ViT configurations covering the options the adapter claims to support."""
    heads = draw(st.sampled_from([1, 2, 3, 4]))
    head_dim = draw(st.sampled_from([4, 6, 8]))
    patch_size = draw(st.sampled_from([2, 4]))
    grid = draw(st.sampled_from([1, 2, 3]))
    class_token = draw(st.booleans())
    global_pool = draw(st.sampled_from(["token", "avg"])) if class_token else "avg"
    return dict(
        depth=draw(st.integers(1, 3)),
        width=heads * head_dim,
        heads=heads,
        mlp_ratio=draw(st.sampled_from([1.0, 2.0, 3.0])),
        img_size=patch_size * grid,
        patch_size=patch_size,
        in_chans=draw(st.sampled_from([1, 3])),
        num_classes=draw(st.integers(2, 7)),
        global_pool=global_pool,
        class_token=class_token,
        reg_tokens=draw(st.integers(0, 2)),
        no_embed_class=draw(st.booleans()),
        qkv_bias=draw(st.booleans()),
        proj_bias=draw(st.booleans()),
        pos_embed=draw(st.sampled_from(["learn", "learn", "none"])),
        fc_norm=draw(st.sampled_from([None, True, False])),
        eps=draw(st.sampled_from([1e-6, 1e-5, 1e-3, 0.1])),
        act=draw(st.sampled_from(sorted(VIT_ACTIVATIONS))),
        seed=draw(st.integers(0, 2**16)),
    )


# -- Hugging Face GPT-2 -------------------------------------------------------------------------

def make_gpt2(
    *,
    depth: int = 2,
    width: int = 24,
    heads: int = 2,
    n_inner: int | None = None,
    vocab: int = 23,
    n_positions: int = 10,
    act: str = "gelu_new",
    eps: float = 1e-5,
    tied: bool = True,
    scale_inv_layer: bool = False,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    **extra,
) -> GPT2LMHeadModel:
    """A tiny randomized GPT2LMHeadModel (eval mode, dropout 0)."""
    config = GPT2Config(
        vocab_size=vocab, n_positions=n_positions, n_embd=width, n_layer=depth, n_head=heads, n_inner=n_inner,
        activation_function=act, layer_norm_epsilon=eps, tie_word_embeddings=tied,
        scale_attn_by_inverse_layer_idx=scale_inv_layer, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=0, eos_token_id=0, **extra,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    randomize_(model, seed)
    return model.to(dtype).eval()


def gpt2_ids(model: GPT2LMHeadModel, batch: int = 2, length: int | None = None, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    T = model.config.n_positions if length is None else length
    return torch.randint(0, model.config.vocab_size, (batch, T), generator=g)


@st.composite
def gpt2_kwargs(draw) -> dict:
    """Random tiny GPT-2 configurations: tied/untied head, n_inner, activations, eps, attention
    scaling (by 1/sqrt(head_dim), by 1/layer index, none), upcast attention."""
    heads = draw(st.sampled_from([1, 2, 3, 4]))
    head_dim = draw(st.sampled_from([4, 6, 8]))
    width = heads * head_dim
    return dict(
        depth=draw(st.integers(1, 3)),
        width=width,
        heads=heads,
        n_inner=draw(st.sampled_from([None, width, 2 * width + 4])),
        vocab=draw(st.integers(5, 29)),
        n_positions=draw(st.integers(3, 9)),
        act=draw(st.sampled_from(["gelu", "gelu_new", "relu"])),
        eps=draw(st.sampled_from([1e-5, 1e-6, 1e-3, 0.1])),
        tied=draw(st.booleans()),
        scale_inv_layer=draw(st.booleans()),
        scale_attn_weights=draw(st.sampled_from([True, True, False])),
        reorder_and_upcast_attn=draw(st.booleans()),
        seed=draw(st.integers(0, 2**16)),
    )


# -- running both -------------------------------------------------------------------------------

def raw_logits(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """The original model's logits (eval mode, no grad)."""
    with torch.no_grad():
        out = model(inputs)
    return out.logits if hasattr(out, "logits") else out


def make_model(arch: str, kwargs: dict, dtype: torch.dtype) -> tuple[nn.Module, torch.Tensor]:
    """(model, inputs) for arch "vit" or "gpt2"."""
    if arch == "vit":
        model = make_vit(**kwargs, dtype=dtype)
        return model, vit_images(model)
    model = make_gpt2(**kwargs, dtype=dtype)
    return model, gpt2_ids(model)


def max_dev(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.detach().double() - b.detach().double()).abs().max().item()


@st.composite
def model_cases(draw, archs: tuple[str, ...] = ("vit", "gpt2"), dtypes: tuple[torch.dtype, ...] = DTYPES):
    """(arch, kwargs, dtype) over both architectures and both float dtypes."""
    arch = draw(st.sampled_from(archs))
    kwargs = draw(vit_kwargs() if arch == "vit" else gpt2_kwargs())
    return arch, kwargs, draw(st.sampled_from(dtypes))


def _gloo_worker(rank: int, world: int, port: int, out: str, fn) -> None:
    from lmc_core import distributed

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    distributed.setup("gloo")
    try:
        results = fn()
        if distributed.is_main():
            torch.save(results, out)
    finally:
        distributed.teardown()


def run_on_gloo(fn, tmp_path: Path, world: int = 2):
    """``fn()`` (a module-level function) run by ``world`` gloo processes on the CPU, as torchrun
    would run it; returns what the main process's call returned."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "gloo.pt")
    mp.spawn(_gloo_worker, args=(world, port, out, fn), nprocs=world, join=True)
    return torch.load(out)


def load_script(name: str):
    """Import scripts/<name>.py as a module (scripts/ is not a package)."""
    root = Path(__file__).resolve().parent.parent
    if str(root / "scripts") not in sys.path:
        sys.path.insert(0, str(root / "scripts"))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, root / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
