"""Loss and accuracy, shared by the trainer and the barrier engine so both measure the same thing.

Classification: cross-entropy of the logits against the labels. Language modelling (targets
None): next-token cross-entropy, logits[:, :-1] against inputs[:, 1:]. Losses are summed in
float32 whatever the autocast dtype, and means are taken over all items (images or predicted
tokens), so a mean never depends on how the data was batched.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IGNORE = -100  # the target of a position that has none (cross_entropy's ignore_index)


def model_logits(model: nn.Module, inputs: Tensor) -> Tensor:
    """Logits of a timm ViT (``model(x)``), an HF model (``model(input_ids=x).logits``) or any
    module that returns logits or an object with a ``.logits`` field."""
    if is_hf_model(getattr(model, "_orig_mod", model)):  # also when compiled
        return model(input_ids=inputs).logits
    out = model(inputs)
    return out.logits if hasattr(out, "logits") else out


def is_hf_model(model: nn.Module) -> bool:
    """A Hugging Face model, told without importing transformers: an HF model's class module has
    imported transformers.modeling_utils already."""
    modeling = sys.modules.get("transformers.modeling_utils")
    return modeling is not None and isinstance(model, modeling.PreTrainedModel)


def loss_and_correct(
    logits: Tensor, inputs: Tensor, targets: Tensor | None
) -> tuple[Tensor, Tensor, int]:
    """Summed cross-entropy (float32), number of correct argmax predictions, number of items.

    ``targets=None`` means language modelling: position t predicts token t+1 of ``inputs``. The
    last position has no next token: it gets the ignored target instead of being sliced off, since
    slicing would copy all the other logits (for a GPT-2 batch, B · T · 50,257 floats).
    """
    count = None
    if targets is None:
        targets = F.pad(inputs[:, 1:], (0, 1), value=IGNORE)
        count = inputs.shape[0] * (inputs.shape[1] - 1)
    logits = logits.reshape(-1, logits.shape[-1]).float()
    targets = targets.reshape(-1)
    loss = F.cross_entropy(logits, targets, reduction="sum", ignore_index=IGNORE)
    correct = (logits.argmax(dim=-1) == targets).sum()
    return loss, correct, targets.numel() if count is None else count


def autocast_context(device: torch.device | str, enabled: bool | None = None) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (``enabled=None``: on exactly when the device is CUDA); CPU stays
    in float32 so CPU runs are exact and reproducible."""
    device = torch.device(device)
    if enabled is None:
        enabled = device.type == "cuda"
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor | None]],
    *,
    autocast: bool | None = None,
) -> dict[str, float | int]:
    """Mean loss and accuracy of ``model`` over all items of ``batches``, and their number.

    Runs in eval mode and restores the model's mode afterwards. ``autocast``: bf16 autocast on or
    off; None (default) turns it on for CUDA batches only.
    """
    was_training = model.training
    model.eval()
    total_loss = total_correct = None
    count = 0
    for inputs, targets in batches:
        with autocast_context(inputs.device, autocast):
            logits = model_logits(model, inputs)
        loss, correct, n = loss_and_correct(logits, inputs, targets)
        # Accumulate on the device in float64: no host sync per batch, no float32 drift.
        loss, correct = loss.double(), correct.double()
        total_loss = loss if total_loss is None else total_loss + loss
        total_correct = correct if total_correct is None else total_correct + correct
        count += n
    model.train(was_training)
    if count == 0:
        raise ValueError("evaluate: no data in batches")
    return {"loss": total_loss.item() / count, "accuracy": total_correct.item() / count,
            "items": count}
