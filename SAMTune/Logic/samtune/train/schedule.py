"""Learning-rate schedule: linear warm-up, then polynomial decay to zero."""

from __future__ import annotations

import functools
from collections.abc import Sequence

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
    optimizer: torch.optim.Optimizer,
    *,
    total_steps: int,
    warmup_steps: int | Sequence[int],
    power: float | Sequence[float] = 0.9,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` applying :func:`warmup_poly_factor` per optimiser step.

    ``warmup_steps`` and ``power`` may be sequences with one value per parameter group (each group
    then follows its own schedule, e.g. BLO-SAM's weights and prompt).
    """
    if total_steps < 1:
        raise ConfigurationError(f"Training needs at least one step, got total_steps={total_steps}.")
    groups = len(optimizer.param_groups)
    warmups = [int(warmup_steps)] * groups if isinstance(warmup_steps, int) else [int(w) for w in warmup_steps]
    powers = [float(power)] * groups if isinstance(power, (int, float)) else [float(p) for p in power]
    if len(warmups) != groups or len(powers) != groups:
        raise ValueError(f"One schedule per parameter group expected ({groups}), got {len(warmups)}/{len(powers)}.")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        [
            functools.partial(warmup_poly_factor, total_steps=total_steps, warmup_steps=w, power=p)
            for w, p in zip(warmups, powers)
        ],
    )
