"""Prompts simulated from ground-truth masks, for prompted training (finetune-SAM's recipe, plus the
freehand prompts of the Segment Editor effect).

* Box: tight box of one connected object, each side jittered by Gaussian noise with std 10 % of
  the box side, clipped to 20 px.
* Point: a pixel whose distance to the object's edge is above the median (near the centre).
* Scribble: points sampled along a stroke between two deep points of the object (positive), and,
  half the time, a short stroke just outside it (negative), as :mod:`samtune.predict.strokes` samples
  a drawn stroke.
* Lasso: an outline drawn loosely around the object: the object grown by 1-6 px, given as its box
  and as SAM's mask input.
* Mask (refining a segment): the object eroded or grown by up to 4 px and shifted by up to 3 px,
  as SAM's mask input, with one click in the largest error, as SAM's own iterative training clicks.
* Mixed: one of the five per batch (SAM's prompt encoder takes one kind for a whole batch).

Coordinates are model-input pixels, ``x`` = column.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch

from samtune.predict.strokes import SCRIBBLE_MAX_POINTS, SCRIBBLE_SPACING, scribble_points

#: The kinds a ``mixed`` run draws from.
MIXED_KINDS = ("box", "point", "scribble", "lasso", "mask")


@dataclass
class SimulatedPrompts:
    """One batch's prompts: ``(B, 4)`` boxes, ``((B, P, 2), (B, P))`` points (label -1 = padding) and
    ``(B, S, S)`` boolean mask prompts in the model-input frame; ``None`` where the kind has none."""

    boxes: torch.Tensor | None = None
    points: tuple[torch.Tensor, torch.Tensor] | None = None
    masks: torch.Tensor | None = None


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


def _grown(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` dilated (``radius > 0``) or eroded (``< 0``) by a ball of ``|radius|`` px."""
    if radius == 0:
        return mask.copy()
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    morph = sitk.BinaryDilate if radius > 0 else sitk.BinaryErode
    return sitk.GetArrayFromImage(morph(image, [abs(int(radius))] * 2)).astype(bool)


def simulate_scribble(mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(P, 2)`` points and ``(P,)`` labels: a positive stroke through the object, sometimes a negative
    one just outside it."""
    start, end = simulate_point(mask, rng), simulate_point(mask, rng)
    inside = scribble_points([start, end], spacing=SCRIBBLE_SPACING, max_points=SCRIBBLE_MAX_POINTS)
    rows = np.clip(np.round(inside[:, 1]).astype(int), 0, mask.shape[0] - 1)
    cols = np.clip(np.round(inside[:, 0]).astype(int), 0, mask.shape[1] - 1)
    keep = mask[rows, cols] | ~mask.any()  # a straight stroke across a curved object leaves it: drop those
    keep[[0, -1]] = True
    points, labels = [inside[keep]], [np.ones(int(keep.sum()), dtype=np.int64)]
    if mask.any() and rng.random() < 0.5:
        ring = _grown(mask, int(rng.integers(3, 9))) & ~_grown(mask, 2)
        ring_rows, ring_cols = np.nonzero(ring)
        if len(ring_rows):
            pick = rng.integers(len(ring_rows))
            near = np.hypot(ring_rows - ring_rows[pick], ring_cols - ring_cols[pick]) <= 20
            chosen = rng.permutation(np.flatnonzero(near))[:4]
            points.append(np.stack([ring_cols[chosen], ring_rows[chosen]], axis=1).astype(np.float32))
            labels.append(np.zeros(len(chosen), dtype=np.int64))
    return np.concatenate(points).astype(np.float32), np.concatenate(labels)


def simulate_lasso(mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(4,)`` box and ``(H, W)`` interior of an outline drawn loosely around the object."""
    if not mask.any():
        return simulate_box(mask, rng), mask.copy()
    interior = _grown(mask, int(rng.integers(1, 7)))
    rows, cols = np.nonzero(interior)
    return np.array([cols.min(), rows.min(), cols.max(), rows.max()], dtype=np.float32), interior


def simulate_mask_prompt(mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """A rough segment of the object (eroded or grown, shifted), one click ``(2,)`` in its largest error, and
    the click's label (1: the segment missed it, 0: the segment should not hold it)."""
    rough = _grown(mask, int(rng.integers(-4, 5)))
    rough = np.roll(rough, tuple(int(v) for v in rng.integers(-3, 4, size=2)), axis=(0, 1))
    missed, extra = mask & ~rough, rough & ~mask
    error, label = (missed, 1) if missed.sum() >= extra.sum() else (extra, 0)
    if not error.any():
        return rough, simulate_point(mask, rng), 1
    return rough, simulate_point(_largest_component(error), rng), label


def simulate_prompts(masks: torch.Tensor, mode: str, rng: np.random.Generator) -> SimulatedPrompts:
    """The prompts of ``mode`` (``box``, ``point``, ``scribble``, ``lasso``, ``mask``, ``mixed``; anything
    else: none) for a batch of ``(B, S, S)`` ground-truth masks."""
    arrays = masks.detach().cpu().numpy().astype(bool)
    device = masks.device
    kind = MIXED_KINDS[int(rng.integers(len(MIXED_KINDS)))] if mode == "mixed" else str(mode)
    out = SimulatedPrompts()
    point_sets: list[tuple[np.ndarray, np.ndarray]] = []
    if kind == "box":
        out.boxes = torch.as_tensor(np.stack([simulate_box(m, rng) for m in arrays]), device=device)
    elif kind == "point":
        point_sets = [(simulate_point(m, rng)[None], np.ones(1, dtype=np.int64)) for m in arrays]
    elif kind == "scribble":
        point_sets = [simulate_scribble(m, rng) for m in arrays]
    elif kind == "lasso":
        boxes, interiors = zip(*(simulate_lasso(m, rng) for m in arrays))
        out.boxes = torch.as_tensor(np.stack(boxes), device=device)
        out.masks = torch.as_tensor(np.stack(interiors), device=device)
    elif kind == "mask":
        rough, clicks, labels = zip(*(simulate_mask_prompt(m, rng) for m in arrays))
        out.masks = torch.as_tensor(np.stack(rough), device=device)
        point_sets = [(c[None], np.array([lab], dtype=np.int64)) for c, lab in zip(clicks, labels)]
    if point_sets:
        most = max(len(p) for p, _ in point_sets)
        coords = np.zeros((len(point_sets), most, 2), dtype=np.float32)
        labels_out = -np.ones((len(point_sets), most), dtype=np.int64)
        for b, (p, lab) in enumerate(point_sets):
            coords[b, : len(p)], labels_out[b, : len(p)] = p, lab
        out.points = (torch.as_tensor(coords, device=device), torch.as_tensor(labels_out, device=device))
    return out
