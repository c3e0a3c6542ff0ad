"""The registered adapters, and `canonicalize`, which dispatches on them."""

from __future__ import annotations

from torch import nn

from ..canonical import CanonicalTransformer
from .base import Adapter, UnsupportedModelError, build_canonical
from .hf_gpt2 import HFGPT2Adapter
from .timm_vit import TimmViTAdapter

ADAPTERS: list[Adapter] = [TimmViTAdapter(), HFGPT2Adapter()]


def register_adapter(adapter: Adapter) -> None:
    """Make `canonicalize` accept another architecture."""
    ADAPTERS.insert(0, adapter)


def adapter_for(model: nn.Module) -> Adapter:
    """The adapter that reads `model`; a clear error if none does."""
    for adapter in ADAPTERS:
        if adapter.matches(model):
            return adapter
    known = ", ".join(a.name for a in ADAPTERS)
    raise UnsupportedModelError(
        f"no adapter for {type(model).__module__}.{type(model).__name__}; supported: {known}. "
        "Add one in lmc_core/adapters/ (see base.Adapter)."
    )


def canonicalize(model: nn.Module) -> CanonicalTransformer:
    """The canonical form of a timm VisionTransformer or an HF GPT2LMHeadModel (SPEC section 2).

    The result computes the same logits as `model` in eval mode (to ~1e-6 in fp32, ~1e-12 in
    fp64). A model that is already canonical is returned as is."""
    if isinstance(model, CanonicalTransformer):
        return model
    return build_canonical(adapter_for(model).read(model))
