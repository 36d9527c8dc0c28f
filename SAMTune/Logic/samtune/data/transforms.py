"""Resize the longest side to the model input (aspect kept, padded) and back, exactly.

Frames: a slice of ``h x w`` pixels (``x`` = column, ``y`` = row) is resized to ``nh x nw``
with ``max(nh, nw) = S`` and padded at the bottom/right to ``S x S`` (the model-input frame).
Coordinates scale per axis by ``nw / w`` and ``nh / h`` so that :meth:`restore_coords` is the
exact inverse of :meth:`apply_coords`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from samtune.data.intensity import PixelNorm
from samtune.errors import ConfigurationError

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


class ResizeLongestSide:
    """Aspect-preserving resize of ``(h, w)`` slices to fit ``target x target``, with its inverse.

    Args:
        target: Side ``S`` of the square model input.
        original_size: ``(h, w)`` of the slices this instance maps.
    """

    def __init__(self, target: int, original_size: tuple[int, int]) -> None:
        if int(target) < 1:
            raise ConfigurationError(f"Resize target must be a positive size, got {target}.")
        h, w = (int(v) for v in original_size)
        if h < 1 or w < 1:
            raise ConfigurationError(f"Slice size must be positive, got {original_size}.")
        self.target = int(target)
        self.original_size = (h, w)
        scale = self.target / max(h, w)
        self.new_size = (
            min(self.target, max(1, int(h * scale + 0.5))),
            min(self.target, max(1, int(w * scale + 0.5))),
        )

    @property
    def scale_xy(self) -> tuple[float, float]:
        """Per-axis scale factors ``(nw / w, nh / h)``."""
        return self.new_size[1] / self.original_size[1], self.new_size[0] / self.original_size[0]

    def apply_image(self, images: torch.Tensor) -> torch.Tensor:
        """``Bx C x h x w`` float images -> ``B x C x nh x nw`` (bilinear, antialiased when shrinking)."""
        shrinking = self.new_size[0] < self.original_size[0] or self.new_size[1] < self.original_size[1]
        return F.interpolate(images, size=self.new_size, mode="bilinear", align_corners=False, antialias=shrinking)

    def apply_mask(self, masks: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``(B, h, w)`` binary masks -> ``(B, nh, nw)`` (nearest neighbour)."""
        tensor = torch.as_tensor(np.asarray(masks), dtype=torch.float32)[:, None]
        return F.interpolate(tensor, size=self.new_size, mode="nearest-exact")[:, 0] > 0.5

    def pad(self, images: torch.Tensor) -> torch.Tensor:
        """``B x C x nh x nw`` -> ``B x C x S x S`` with zeros at the bottom/right."""
        pad_h = self.target - images.shape[-2]
        pad_w = self.target - images.shape[-1]
        return F.pad(images, (0, pad_w, 0, pad_h))

    def apply_coords(self, xy: np.ndarray) -> np.ndarray:
        """``(..., 2)`` pixel ``(x, y)`` in the slice frame -> model-input frame."""
        sx, sy = self.scale_xy
        out = np.asarray(xy, dtype=np.float32).copy()
        out[..., 0] *= sx
        out[..., 1] *= sy
        return out

    def restore_coords(self, xy: np.ndarray) -> np.ndarray:
        """Exact inverse of :meth:`apply_coords`."""
        sx, sy = self.scale_xy
        out = np.asarray(xy, dtype=np.float32).copy()
        out[..., 0] /= sx
        out[..., 1] /= sy
        return out

    def apply_boxes(self, boxes: np.ndarray) -> np.ndarray:
        """``(N, 4)`` XYXY boxes in the slice frame -> model-input frame."""
        return self.apply_coords(np.asarray(boxes, dtype=np.float32).reshape(-1, 2, 2)).reshape(-1, 4)

    def restore_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """``(..., S, S)`` or low-resolution ``(..., L, L)`` logits -> ``(..., h, w)`` (bilinear).

        Low-resolution logits are first upsampled to ``S x S``; the padding is cropped and the valid
        part resized to the original slice size.
        """
        height, width = logits.shape[-2:]
        lead = logits.shape[:-2]
        flat = logits.reshape(-1, 1, height, width)
        if (height, width) != (self.target, self.target):  # low-res logits: to input size first, as SAM does
            flat = F.interpolate(flat, size=(self.target, self.target), mode="bilinear", align_corners=False)
        valid = flat[..., : self.new_size[0], : self.new_size[1]]
        restored = F.interpolate(valid, size=self.original_size, mode="bilinear", align_corners=False)
        return restored.reshape(*lead, *self.original_size)

    def restore_mask(self, masks: np.ndarray | torch.Tensor) -> np.ndarray:
        """``(B, S, S)`` binary masks in model space -> ``(B, h, w)`` (crop, nearest neighbour)."""
        tensor = torch.as_tensor(np.asarray(masks), dtype=torch.float32)
        valid = tensor[:, : self.new_size[0], : self.new_size[1]][:, None]
        return (F.interpolate(valid, size=self.original_size, mode="nearest-exact")[:, 0] > 0.5).numpy()


def normalize_pixels(images: torch.Tensor, norm: PixelNorm | str) -> torch.Tensor:
    """Apply a backbone's pixel normalisation to ``B x 3 x H x W`` images with values in 0..255.

    ``sam``: ``(x - mean) / std`` per channel. ``minmax``: per image ``(x - min) / (max - min)``
    into ``[0, 1]`` (a constant image becomes 0).
    """
    norm = PixelNorm.parse(norm)
    if norm is PixelNorm.SAM:
        mean = torch.tensor(SAM_PIXEL_MEAN, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(SAM_PIXEL_STD, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        return (images - mean) / std
    flat = images.reshape(images.shape[0], -1)
    low = flat.min(dim=1).values.view(-1, 1, 1, 1)
    high = flat.max(dim=1).values.view(-1, 1, 1, 1)
    span = (high - low).clamp_min(1e-8)
    return torch.where(high > low, (images - low) / span, torch.zeros_like(images))
