"""Model adapters: one small file per architecture, `canonicalize`, which dispatches on them, and
`export`, the way back.

Adding an architecture means adding one `Adapter` subclass and registering it
(`register_adapter`); every symmetry, alignment and interpolation then works on its canonical
form unchanged. An adapter never imports its framework at module level: timm and transformers
are loaded only when a model of theirs is adapted."""

from .base import Adapter, AttentionWeights, UnsupportedModelError
from .exporting import NotRepresentableError, export
from .registry import ADAPTERS, adapter_for, canonicalize, register_adapter

__all__ = ["ADAPTERS", "Adapter", "AttentionWeights", "NotRepresentableError", "UnsupportedModelError",
           "adapter_for", "canonicalize", "export", "register_adapter"]
