"""Learning-rate schedule: linear warm-up, then cosine decay from the peak to a floor."""

from __future__ import annotations

import math

import torch


def lr_factor(step: int, total_steps: int, warmup_steps: int, floor: float) -> float:
    """Multiplier of the peak learning rate at optimiser step ``step`` (0-based).

    Warm-up climbs linearly to 1 over ``warmup_steps``; the cosine then falls to ``floor`` (the
    final lr divided by the peak) at ``total_steps``.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, peak_lr: float, final_lr: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` (so its position saves and restores with ``state_dict``)."""
    floor = final_lr / peak_lr
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup_steps, floor)
    )
