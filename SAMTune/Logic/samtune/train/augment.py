"""Augmentation applied identically to a batch of model-space images and masks.

Geometric transforms (flips, rotation, random resized crop as a zoom) move image and mask with one
affine grid (bilinear for the image, nearest for the mask); intensity transforms (jitter,
histogram equalisation) touch the image only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from samtune.train.config import AugmentConfig


def _equalize(image: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation of one ``C x H x W`` image, keeping its value range."""
    low, high = image.min(), image.max()
    if high <= low:
        return image
    flat = image.mean(0).flatten()
    ranks = torch.empty_like(flat)
    ranks[flat.argsort()] = torch.linspace(0, 1, flat.numel(), device=image.device)
    equalised = ranks.view(image.shape[1:]) * (high - low) + low
    return equalised.expand_as(image).clone()


def augment_batch(
    images: torch.Tensor, masks: torch.Tensor, config: AugmentConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment ``(B, C, S, S)`` images and ``(B, S, S)`` masks with the same random transforms.

    Args:
        images: Normalised model inputs.
        masks: Binary masks in the same frame.
        config: Probabilities and ranges.
        generator: CPU random generator (seeded by the trainer for reproducible runs).
    """
    if not config.enabled:
        return images, masks
    batch = images.shape[0]

    def chance(p: float) -> torch.Tensor:
        return torch.rand(batch, generator=generator) < p

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(batch, generator=generator)

    angle = torch.where(chance(config.rotate_p), uniform(-config.rotate_degrees, config.rotate_degrees), 0.0)
    scale = torch.where(chance(config.zoom_p), uniform(*config.zoom), 1.0)
    flip_x = torch.where(chance(config.flip), -1.0, 1.0)
    flip_y = torch.where(chance(config.flip), -1.0, 1.0)
    radians = angle * math.pi / 180
    cos, sin = torch.cos(radians) / scale, torch.sin(radians) / scale
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos * flip_x, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin, cos * flip_y
    theta = theta.to(images.device, images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    masks = F.grid_sample(masks[:, None].float(), grid, mode="nearest", align_corners=False)[:, 0] > 0.5

    jitter = chance(config.intensity_p).to(images.device)
    gain = uniform(1 - config.intensity, 1 + config.intensity).to(images.device, images.dtype)
    shift = uniform(-config.intensity, config.intensity).to(images.device, images.dtype)
    span = images.flatten(1).std(dim=1).clamp_min(1e-6)
    jittered = images * gain.view(-1, 1, 1, 1) + (shift * span).view(-1, 1, 1, 1)
    images = torch.where(jitter.view(-1, 1, 1, 1), jittered, images)
    for b in torch.nonzero(chance(config.equalize_p)).flatten().tolist():
        images[b] = _equalize(images[b])
    return images, masks
