"""Segmentation losses on logits: soft Dice + binary cross-entropy, Conv-LoRA's structure loss, and the
per-slice presence loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, *, eps: float = 1.0) -> torch.Tensor:
    """``1 - Dice`` of sigmoid(logits) vs a binary target, per item, averaged.

    Args:
        logits: ``(B, 1, H, W)`` or ``(B, H, W)``.
        target: Same shape, values in {0, 1}.
        eps: Smoothing; an empty prediction of an empty target scores 0 loss.
    """
    p = torch.sigmoid(logits).flatten(1)
    t = target.float().flatten(1)
    intersection = (p * t).sum(1)
    return (1 - (2 * intersection + eps) / (p.sum(1) + t.sum(1) + eps)).mean()


def dice_ce_loss(
    logits: torch.Tensor, target: torch.Tensor, *, dice_weight: float = 0.5, ce_weight: float = 0.5
) -> torch.Tensor:
    """``dice_weight * soft Dice loss + ce_weight * BCE`` (mean over pixels)."""
    bce = F.binary_cross_entropy_with_logits(logits, target.float())
    return dice_weight * soft_dice_loss(logits, target) + ce_weight * bce


def presence_loss(score: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE of per-slice presence logits ``(B,)`` against "the target ``(B, ...)`` has foreground"."""
    present = target.flatten(1).any(dim=1).to(score.dtype)
    return F.binary_cross_entropy_with_logits(score.float(), present.float())


def structure_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Boundary-weighted BCE + weighted IoU (as Conv-LoRA's reference training).

    Pixels whose 31x31 neighbourhood disagrees with them (near boundaries) weigh up to 6x more.
    """
    t = target.float()
    if t.ndim == 3:
        t = t[:, None]
    if logits.ndim == 3:
        logits = logits[:, None]
    weight = 1 + 5 * torch.abs(F.avg_pool2d(t, kernel_size=31, stride=1, padding=15) - t)
    bce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    wbce = (weight * bce).sum(dim=(2, 3)) / weight.sum(dim=(2, 3))
    p = torch.sigmoid(logits)
    inter = (p * t * weight).sum(dim=(2, 3))
    union = ((p + t) * weight).sum(dim=(2, 3))
    wiou = 1 - (inter + 1) / (union - inter + 1)
    return (wbce + wiou).mean()
