"""Build the two architectures from their recipes: a timm ViT and a Hugging Face GPT-2.

Both are constructed from their classes directly (never from a hub), so nothing is downloaded
and the random initialisation is decided by the torch seed alone.
"""

from __future__ import annotations

from timm.models.vision_transformer import VisionTransformer
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from .profiles import GPT2Recipe, Profile, ViTRecipe

KINDS = ("vit", "gpt2")


def build_vit(recipe: ViTRecipe, num_classes: int, in_chans: int, img_size: int) -> VisionTransformer:
    """A pre-norm timm ViT: no norm before the blocks, no layer scale, fixed image size.

    These switches matter to the canonical form: each block must read the residual stream through
    exactly one LayerNorm and write back through attention and MLP with nothing in between.
    """
    model = VisionTransformer(
        img_size=img_size,
        patch_size=recipe.patch_size,
        in_chans=in_chans,
        num_classes=num_classes,
        global_pool=recipe.global_pool,
        embed_dim=recipe.embed_dim,
        depth=recipe.depth,
        num_heads=recipe.num_heads,
        mlp_ratio=recipe.mlp_dim / recipe.embed_dim,
        qkv_bias=recipe.qkv_bias,
        class_token=recipe.class_token,
        pre_norm=False,
        init_values=None,
        dynamic_img_size=False,
    )
    # timm takes a ratio and rounds down; make sure the hidden width is the one asked for.
    if model.blocks[0].mlp.fc1.out_features != recipe.mlp_dim:
        raise ValueError(f"vit.mlp_dim {recipe.mlp_dim} is not reachable as a ratio of "
                         f"vit.embed_dim {recipe.embed_dim}")
    return model


def build_gpt2(recipe: GPT2Recipe, vocab_size: int) -> GPT2LMHeadModel:
    """A GPT-2 language model with an untied head (the paper's setting)."""
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=recipe.block_size,
        n_embd=recipe.n_embd,
        n_layer=recipe.n_layer,
        n_head=recipe.n_head,
        n_inner=recipe.n_inner,
        activation_function=recipe.activation,
        resid_pdrop=recipe.dropout,
        embd_pdrop=recipe.dropout,
        attn_pdrop=recipe.dropout,
        tie_word_embeddings=False,
        use_cache=False,
        # No token ids are special to a model trained here; HF's defaults (50256) would exceed a
        # small BPE's vocabulary.
        bos_token_id=None,
        eos_token_id=None,
    )
    return GPT2LMHeadModel(config)


def build_model(
    kind: str,
    profile: Profile,
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    img_size: int | None = None,
    vocab_size: int | None = None,
) -> nn.Module:
    """Build ``kind`` ("vit" or "gpt2") from the profile's recipe; pass the data's shape."""
    if kind == "vit":
        if num_classes is None or in_chans is None or img_size is None:
            raise ValueError("build_model('vit') needs num_classes, in_chans and img_size")
        return build_vit(profile.vit, num_classes, in_chans, img_size)
    if kind == "gpt2":
        if vocab_size is None:
            raise ValueError("build_model('gpt2') needs vocab_size")
        return build_gpt2(profile.gpt2, vocab_size)
    raise ValueError(f"unknown model kind {kind!r}; valid kinds: {', '.join(KINDS)}")


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (the book prints it next to every model)."""
    return sum(p.numel() for p in model.parameters())
