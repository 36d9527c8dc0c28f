"""Prompts simulated from ground-truth masks, for prompted training (finetune-SAM's recipe).

Box: tight box of one connected object, each side jittered by Gaussian noise with std 10 % of the
box side, clipped to 20 px. Point: a pixel whose distance to the object's edge is above the median
(near the centre). Coordinates are model-input pixels, ``x`` = column.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch


def _largest_component(mask: np.ndarray) -> np.ndarray:
    components = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8))))
    if components.max() <= 1:
        return mask
    sizes = np.bincount(components.ravel())[1:]
    return components == (int(np.argmax(sizes)) + 1)


def simulate_box(
    mask: np.ndarray, rng: np.random.Generator, *, noise: float = 0.1, max_shift: float = 20.0
) -> np.ndarray:
    """``(4,)`` XYXY box around one object of ``mask`` (``H x W``), jittered; the full image if empty."""
    h, w = mask.shape
    if not mask.any():
        return np.array([0, 0, w - 1, h - 1], dtype=np.float32)
    rows, cols = np.nonzero(_largest_component(mask))
    box = np.array([cols.min(), rows.min(), cols.max(), rows.max()], dtype=np.float32)
    sides = np.array([box[2] - box[0] + 1, box[3] - box[1] + 1] * 2, dtype=np.float32)
    shift = np.clip(rng.normal(0.0, noise * sides), -max_shift, max_shift)
    box = (box + shift).astype(np.float32)
    box[[0, 2]] = np.clip(np.sort(box[[0, 2]]), 0, w - 1)
    box[[1, 3]] = np.clip(np.sort(box[[1, 3]]), 0, h - 1)
    return box


def simulate_point(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``(2,)`` ``(x, y)`` inside the object, deeper than the median distance to its edge."""
    if not mask.any():
        h, w = mask.shape
        return np.array([rng.integers(w), rng.integers(h)], dtype=np.float32)
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    distance = -sitk.GetArrayFromImage(
        sitk.SignedMaurerDistanceMap(image, insideIsPositive=False, useImageSpacing=False)
    )
    inside = distance[mask]
    rows, cols = np.nonzero(mask & (distance >= np.median(inside)))
    pick = rng.integers(len(rows))
    return np.array([cols[pick], rows[pick]], dtype=np.float32)


def simulate_prompts(
    masks: torch.Tensor, mode: str, rng: np.random.Generator
) -> tuple[torch.Tensor | None, tuple[torch.Tensor, torch.Tensor] | None]:
    """Boxes ``(B, 4)`` or one positive point per item ``((B, 1, 2), (B, 1))`` for ``(B, S, S)`` masks."""
    arrays = masks.detach().cpu().numpy().astype(bool)
    if mode == "box":
        boxes = np.stack([simulate_box(m, rng) for m in arrays])
        return torch.as_tensor(boxes, device=masks.device), None
    if mode == "point":
        points = np.stack([simulate_point(m, rng) for m in arrays])[:, None]
        labels = np.ones((len(arrays), 1), dtype=np.int64)
        return None, (
            torch.as_tensor(points, device=masks.device),
            torch.as_tensor(labels, device=masks.device),
        )
    return None, None
