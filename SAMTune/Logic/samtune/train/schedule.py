"""Learning-rate schedule: linear warm-up, then polynomial decay to zero."""

from __future__ import annotations

import torch

from samtune.errors import ConfigurationError


def warmup_poly_factor(step: int, *, total_steps: int, warmup_steps: int, power: float = 0.9) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based).

    Warm-up rises linearly from ``1/(warmup+1)`` to 1 over ``warmup_steps``; then
    ``(1 - progress) ** power`` decays to 0 at ``total_steps``. The first step never runs at a stray
    tiny learning rate beyond the warm-up (a defect of the BLO-SAM reference code).
    """
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    remaining = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / remaining)
    return (1.0 - progress) ** power


def make_scheduler(
    optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_steps: int, power: float = 0.9
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` applying :func:`warmup_poly_factor` per optimiser step."""
    if total_steps < 1:
        raise ConfigurationError(f"Training needs at least one step, got total_steps={total_steps}.")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: warmup_poly_factor(step, total_steps=total_steps, warmup_steps=warmup_steps, power=power),
    )
