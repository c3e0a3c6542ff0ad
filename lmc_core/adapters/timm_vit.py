"""Adapter for timm's `VisionTransformer` (pre-norm ViT: class token or average pooling,
optional register tokens, `no_embed_class`, `fc_norm`, any depth/width/heads/MLP ratio)."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from ..canonical import CanonicalConfig
from .base import (
    Adapter,
    AttentionWeights,
    BlockWeights,
    LayerNormWeights,
    RawTransformer,
    UnsupportedModelError,
    copy_into,
    imported_class,
)


def _activation_name(act: nn.Module) -> str:
    from timm.layers import activations  # timm's own GELU modules compute F.gelu exactly too

    if isinstance(act, nn.GELU):
        return "gelu_tanh" if act.approximate == "tanh" else "gelu"
    if isinstance(act, activations.GELU):
        return "gelu"
    if isinstance(act, activations.GELUTanh):
        return "gelu_tanh"
    if isinstance(act, nn.ReLU):
        return "relu"
    raise UnsupportedModelError(f"timm ViT: MLP activation {type(act).__name__} is not supported (GELU or ReLU)")


def _layer_norm(norm: nn.Module, where: str) -> LayerNormWeights:
    if not isinstance(norm, nn.LayerNorm) or norm.weight is None:
        raise UnsupportedModelError(f"timm ViT: {where} is {type(norm).__name__}; only affine LayerNorm is supported")
    bias = norm.bias if norm.bias is not None else torch.zeros_like(norm.weight)
    return LayerNormWeights(norm.weight.detach(), bias.detach(), float(norm.eps))


class TimmViTAdapter(Adapter):
    name = "timm.VisionTransformer"

    def matches(self, model: nn.Module) -> bool:
        vit = imported_class("timm.models.vision_transformer", "VisionTransformer")
        return vit is not None and isinstance(model, vit)

    def num_layers(self, model: nn.Module) -> int:
        return len(model.blocks)

    def _check(self, model: nn.Module) -> None:
        from timm.layers import Mlp
        from timm.layers.attention import Attention
        from timm.models.vision_transformer import Block

        def unsupported(what: str) -> UnsupportedModelError:
            return UnsupportedModelError(f"timm ViT: {what} is not supported by the canonical form")

        pe = model.patch_embed
        if getattr(model, "dynamic_img_size", False) or getattr(pe, "dynamic_img_pad", False):
            raise unsupported("dynamic image size/padding")
        if not isinstance(pe.proj, nn.Conv2d) or pe.proj.kernel_size != pe.proj.stride or pe.proj.padding != (0, 0):
            raise unsupported("a patch embedding that is not a non-overlapping Conv2d")
        if not isinstance(pe.norm, nn.Identity):
            raise unsupported("a norm inside the patch embedding")
        if pe.patch_size[0] != pe.patch_size[1] or pe.img_size[0] != pe.img_size[1]:
            raise unsupported("non-square patches or images")
        if not isinstance(model.norm_pre, nn.Identity):
            raise unsupported("pre_norm (a LayerNorm before the blocks)")
        if getattr(model, "attn_pool", None) is not None:
            raise unsupported("attention pooling (global_pool='map')")
        if model.global_pool not in ("token", "avg"):
            raise unsupported(f"global_pool={model.global_pool!r} (use 'token' or 'avg')")
        if model.global_pool == "token" and not model.has_class_token:
            raise unsupported("token pooling without a class token")
        if model.global_pool == "avg" and getattr(model, "pool_include_prefix", False):
            raise unsupported("pool_include_prefix=True")
        if not isinstance(model.head, nn.Linear):
            raise unsupported("a model without a linear classifier head (num_classes=0)")
        if isinstance(model.norm, nn.Identity) == isinstance(model.fc_norm, nn.Identity):
            raise unsupported("a model without exactly one final norm (final_norm=False)")
        for i, block in enumerate(model.blocks):
            if type(block) is not Block:
                raise unsupported(f"block {i} of type {type(block).__name__} (post-norm or parallel blocks)")
            if not isinstance(block.ls1, nn.Identity) or not isinstance(block.ls2, nn.Identity):
                raise unsupported("layer scale (init_values)")
            attn = block.attn
            if type(attn) is not Attention:
                raise unsupported(f"attention of type {type(attn).__name__}")
            if not (isinstance(attn.q_norm, nn.Identity) and isinstance(attn.k_norm, nn.Identity)):
                raise unsupported("qk_norm")
            if not isinstance(getattr(attn, "norm", nn.Identity()), nn.Identity):
                raise unsupported("attention scale_norm")
            if getattr(attn, "gate", None) is not None:
                raise unsupported("gated attention")
            if type(block.mlp) is not Mlp or not isinstance(block.mlp.norm, nn.Identity):
                raise unsupported(f"MLP of type {type(block.mlp).__name__} (or with a hidden norm)")

    def read(self, model: nn.Module) -> RawTransformer:
        self._check(model)
        pe = model.patch_embed
        d = model.embed_dim
        weight = pe.proj.weight.detach()
        dtype, device = weight.dtype, weight.device
        bias = pe.proj.bias.detach() if pe.proj.bias is not None else torch.zeros(d, dtype=dtype, device=device)
        n_patches = pe.num_patches
        prefix_tokens = [t.detach()[0] for t in (model.cls_token, model.reg_token) if t is not None]
        prefix = torch.cat(prefix_tokens) if prefix_tokens else weight.new_zeros(0, d)
        n_prefix = prefix.shape[0]
        if model.pos_embed is None:
            pos = weight.new_zeros(n_patches, d)
        elif model.no_embed_class:
            pos = model.pos_embed.detach()[0]
        else:  # the position embedding covers the prefix tokens too: fold it into them
            full = model.pos_embed.detach()[0]
            prefix, pos = prefix + full[:n_prefix], full[n_prefix:]
        embed = {"patch_embed": weight.reshape(d, -1).T, "patch_bias": bias, "pos_embed": pos, "prefix": prefix}

        blocks, norms, acts, scales = [], [], set(), []
        for i, block in enumerate(model.blocks):
            n1, n2 = _layer_norm(block.norm1, f"block {i} norm1"), _layer_norm(block.norm2, f"block {i} norm2")
            norms += [n1, n2]
            acts.add(_activation_name(block.mlp.act))
            scales.append(float(block.attn.scale))
            mlp = block.mlp
            blocks.append(BlockWeights(
                norm1=n1, attn=self.get_attention(model, i), norm2=n2,
                mlp_in=mlp.fc1.weight.detach().T, mlp_in_bias=_maybe(mlp.fc1.bias),
                mlp_out=mlp.fc2.weight.detach().T, mlp_out_bias=_maybe(mlp.fc2.bias),
            ))
        final_module = model.fc_norm if isinstance(model.norm, nn.Identity) else model.norm
        final = _layer_norm(final_module, "final norm")
        norms.append(final)
        if len(acts) != 1:
            raise UnsupportedModelError(f"timm ViT: blocks use different activations {sorted(acts)}")
        eps = {n.eps for n in norms}
        if len(eps) != 1:
            raise UnsupportedModelError(f"timm ViT: LayerNorms use different eps values {sorted(eps)}")
        config = CanonicalConfig(
            task="image", depth=len(blocks), width=d, num_heads=model.blocks[0].attn.num_heads,
            mlp_width=blocks[0].mlp_in.shape[1], eps=eps.pop(), activation=acts.pop(),
            num_outputs=model.head.out_features, attn_scales=tuple(scales), causal=False,
            patch_size=pe.patch_size[0], in_chans=weight.shape[1], img_size=pe.img_size[0],
            num_prefix=n_prefix, pool=model.global_pool,
            norm_after_pool=not isinstance(model.fc_norm, nn.Identity), source=self.name,
        )
        return RawTransformer(config, embed, blocks, final, model.head.weight.detach().T, _maybe(model.head.bias))

    def get_attention(self, model: nn.Module, layer: int) -> AttentionWeights:
        attn = model.blocks[layer].attn
        H, dh = attn.num_heads, attn.head_dim
        w = attn.qkv.weight.detach().T.reshape(-1, 3, H, dh)  # (d, 3, H, dh)
        b = attn.qkv.bias.detach().reshape(3, H, dh) if attn.qkv.bias is not None else None
        return AttentionWeights(
            q_w=w[:, 0], k_w=w[:, 1], v_w=w[:, 2], o_w=attn.proj.weight.detach().T.reshape(H, dh, -1),
            q_b=None if b is None else b[0], k_b=None if b is None else b[1], v_b=None if b is None else b[2],
            o_b=_maybe(attn.proj.bias),
        )

    def set_attention(self, model: nn.Module, layer: int, weights: AttentionWeights) -> None:
        attn = model.blocks[layer].attn
        d = weights.q_w.shape[0]
        w = torch.stack([weights.q_w, weights.k_w, weights.v_w], dim=1).reshape(d, -1)
        with torch.no_grad():
            attn.qkv.weight.copy_(w.T)
            if attn.qkv.bias is not None:
                attn.qkv.bias.copy_(torch.stack([weights.q_b, weights.k_b, weights.v_b]).reshape(-1))
            attn.proj.weight.copy_(weights.o_w.reshape(-1, d).T)

    @torch.no_grad()
    def write(self, like: nn.Module, raw: RawTransformer) -> nn.Module:
        """A copy of `like` holding `raw` (the inverse of `read`): the prefix tokens get the folded
        position embedding, the prefix rows of `pos_embed` become zero."""
        self._check(like)
        model = copy.deepcopy(like)
        pe, e = model.patch_embed.proj, raw.embed
        copy_into(pe.weight, e["patch_embed"].T, "patch embedding")
        copy_into(pe.bias, e["patch_bias"], "patch embedding bias")
        prefix = [t for t in (model.cls_token, model.reg_token) if t is not None]
        start = 0
        for token in prefix:  # (1, n, d) each: class token, then register tokens
            token.copy_(e["prefix"][start:start + token.shape[1]].unsqueeze(0))
            start += token.shape[1]
        if model.pos_embed is None:
            copy_into(None, e["pos_embed"], "position embedding (the model has pos_embed='none')")
        else:
            rows = model.pos_embed.shape[1] - e["pos_embed"].shape[0]  # prefix rows when they are embedded
            model.pos_embed.zero_()
            model.pos_embed[0, rows:] = e["pos_embed"].to(model.pos_embed)
        for block, weights in zip(model.blocks, raw.blocks, strict=True):
            _write_norm(block.norm1, weights.norm1)
            _write_norm(block.norm2, weights.norm2)
            a, d = weights.attn, weights.attn.q_w.shape[0]
            copy_into(block.attn.qkv.weight, torch.stack([a.q_w, a.k_w, a.v_w], dim=1).reshape(d, -1).T,
                      "qkv weight")
            biases = (a.q_b, a.k_b, a.v_b)  # all None when read from a model with qkv_bias=False
            copy_into(block.attn.qkv.bias, None if all(b is None for b in biases) else torch.stack(biases),
                      "qkv bias")
            copy_into(block.attn.proj.weight, a.o_w.reshape(-1, d).T, "attention output weight")
            copy_into(block.attn.proj.bias, a.o_b, "attention output bias")
            copy_into(block.mlp.fc1.weight, weights.mlp_in.T, "MLP input weight")
            copy_into(block.mlp.fc1.bias, weights.mlp_in_bias, "MLP input bias")
            copy_into(block.mlp.fc2.weight, weights.mlp_out.T, "MLP output weight")
            copy_into(block.mlp.fc2.bias, weights.mlp_out_bias, "MLP output bias")
        _write_norm(model.fc_norm if isinstance(model.norm, nn.Identity) else model.norm, raw.norm_final)
        copy_into(model.head.weight, raw.head.T, "classifier head")
        copy_into(model.head.bias, raw.head_bias, "classifier head bias")
        return model


def _write_norm(norm: nn.LayerNorm, weights: LayerNormWeights) -> None:
    norm.weight.copy_(weights.scale)
    copy_into(norm.bias, weights.bias, "LayerNorm bias")


def _maybe(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach()
