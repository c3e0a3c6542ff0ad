"""Per-step learning-rate schedules, shared by trained curves and the study's trainer."""

from __future__ import annotations

import math

import torch


def make_scheduler(
    optimizer: torch.optim.Optimizer, schedule: str, lr: float, total_steps: int, warmup_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step schedule: "cosine" (linear warmup, cosine to 0) or "onecycle" (torch's)."""
    if schedule == "onecycle":
        pct = min(max(warmup_steps / total_steps, 1e-3), 0.999)  # OneCycleLR needs 0 < pct < 1
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=lr, total_steps=total_steps, pct_start=pct
        )

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
