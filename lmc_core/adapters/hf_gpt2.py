"""Adapter for Hugging Face `GPT2LMHeadModel` (tied or untied head, any size, activations
gelu / gelu_new / gelu_pytorch_tanh / relu, any layer_norm_epsilon)."""

from __future__ import annotations

import copy

import torch
from torch import nn

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

ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}


def _layer_norm(norm: nn.LayerNorm) -> LayerNormWeights:
    bias = norm.bias if norm.bias is not None else torch.zeros_like(norm.weight)
    return LayerNormWeights(norm.weight.detach(), bias.detach(), float(norm.eps))


class HFGPT2Adapter(Adapter):
    name = "transformers.GPT2LMHeadModel"

    def matches(self, model: nn.Module) -> bool:
        gpt2 = imported_class("transformers.models.gpt2.modeling_gpt2", "GPT2LMHeadModel")
        return gpt2 is not None and isinstance(model, gpt2)

    def num_layers(self, model: nn.Module) -> int:
        return len(model.transformer.h)

    def read(self, model: nn.Module) -> RawTransformer:
        cfg = model.config
        if cfg.add_cross_attention:
            raise UnsupportedModelError("GPT-2: cross-attention (add_cross_attention=True) is not supported")
        if cfg.activation_function not in ACTIVATIONS:
            raise UnsupportedModelError(
                f"GPT-2: activation_function={cfg.activation_function!r} is not supported; use one of {sorted(ACTIVATIONS)}")
        if model.lm_head.bias is not None:
            head_bias = model.lm_head.bias.detach()
        else:
            head_bias = None
        t = model.transformer
        H = cfg.n_head
        dh = cfg.n_embd // H
        blocks, scales = [], []
        for i, block in enumerate(t.h):
            mlp = block.mlp
            blocks.append(BlockWeights(
                norm1=_layer_norm(block.ln_1), attn=self.get_attention(model, i), norm2=_layer_norm(block.ln_2),
                mlp_in=mlp.c_fc.weight.detach(), mlp_in_bias=mlp.c_fc.bias.detach(),
                mlp_out=mlp.c_proj.weight.detach(), mlp_out_bias=mlp.c_proj.bias.detach(),
            ))
            scale = dh**-0.5 if cfg.scale_attn_weights else 1.0
            if cfg.scale_attn_by_inverse_layer_idx:
                scale /= float(i + 1)
            scales.append(scale)
        # Tied or not, the canonical head is its own tensor: the embedding is centred as a
        # writer, the head is scaled by the final γ as a reader.
        config = CanonicalConfig(
            task="text", depth=cfg.n_layer, width=cfg.n_embd, num_heads=H,
            mlp_width=blocks[0].mlp_in.shape[1], eps=float(cfg.layer_norm_epsilon),
            activation=ACTIVATIONS[cfg.activation_function], num_outputs=model.lm_head.out_features,
            attn_scales=tuple(scales), causal=True, max_positions=cfg.n_positions, source=self.name,
        )
        embed = {"token_embed": t.wte.weight.detach().clone(), "pos_embed": t.wpe.weight.detach().clone()}
        return RawTransformer(config, embed, blocks, _layer_norm(t.ln_f), model.lm_head.weight.detach().T.clone(),
                              head_bias)

    def get_attention(self, model: nn.Module, layer: int) -> AttentionWeights:
        attn = model.transformer.h[layer].attn
        H, dh = attn.num_heads, attn.head_dim
        d = H * dh
        w = attn.c_attn.weight.detach().reshape(-1, 3, H, dh)  # Conv1D stores (in, out)
        b = attn.c_attn.bias.detach().reshape(3, H, dh)
        return AttentionWeights(
            q_w=w[:, 0], k_w=w[:, 1], v_w=w[:, 2], o_w=attn.c_proj.weight.detach().reshape(H, dh, d),
            q_b=b[0], k_b=b[1], v_b=b[2], o_b=attn.c_proj.bias.detach(),
        )

    def set_attention(self, model: nn.Module, layer: int, weights: AttentionWeights) -> None:
        attn = model.transformer.h[layer].attn
        d = weights.q_w.shape[0]
        with torch.no_grad():
            attn.c_attn.weight.copy_(torch.stack([weights.q_w, weights.k_w, weights.v_w], dim=1).reshape(d, -1))
            attn.c_attn.bias.copy_(torch.stack([weights.q_b, weights.k_b, weights.v_b]).reshape(-1))
            attn.c_proj.weight.copy_(weights.o_w.reshape(-1, d))

    @torch.no_grad()
    def write(self, like: nn.Module, raw: RawTransformer) -> nn.Module:
        """A copy of `like` holding `raw` (the inverse of `read`), with an untied head: the
        canonical embedding (a centred writer) and head (a γ-scaled reader) differ in general."""
        model = copy.deepcopy(like)
        t = model.transformer
        if model.lm_head.weight is t.wte.weight:
            model.lm_head.weight = nn.Parameter(t.wte.weight.detach().clone())
        model.config.tie_word_embeddings = False
        copy_into(t.wte.weight, raw.embed["token_embed"], "token embedding")
        copy_into(t.wpe.weight, raw.embed["pos_embed"], "position embedding")
        for block, weights in zip(t.h, raw.blocks, strict=True):
            for norm, values in ((block.ln_1, weights.norm1), (block.ln_2, weights.norm2)):
                norm.weight.copy_(values.scale)
                copy_into(norm.bias, values.bias, "LayerNorm bias")
            a, d = weights.attn, weights.attn.q_w.shape[0]
            copy_into(block.attn.c_attn.weight, torch.stack([a.q_w, a.k_w, a.v_w], dim=1).reshape(d, -1), "c_attn")
            biases = (a.q_b, a.k_b, a.v_b)  # None when the raw weights come without attention biases
            copy_into(block.attn.c_attn.bias, None if all(b is None for b in biases) else torch.stack(biases),
                      "c_attn bias")
            copy_into(block.attn.c_proj.weight, a.o_w.reshape(-1, d), "attention c_proj")
            copy_into(block.attn.c_proj.bias, a.o_b, "attention c_proj bias")
            copy_into(block.mlp.c_fc.weight, weights.mlp_in, "MLP c_fc")
            copy_into(block.mlp.c_fc.bias, weights.mlp_in_bias, "MLP c_fc bias")
            copy_into(block.mlp.c_proj.weight, weights.mlp_out, "MLP c_proj")
            copy_into(block.mlp.c_proj.bias, weights.mlp_out_bias, "MLP c_proj bias")
        t.ln_f.weight.copy_(raw.norm_final.scale)
        copy_into(t.ln_f.bias, raw.norm_final.bias, "final LayerNorm bias")
        copy_into(model.lm_head.weight, raw.head.T, "lm_head")
        copy_into(model.lm_head.bias, raw.head_bias, "lm_head bias")
        return model
