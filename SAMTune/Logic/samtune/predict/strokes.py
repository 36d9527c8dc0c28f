"""Freehand prompts drawn in a slice view: scribbles and lassos, as SAM prompts.

SAM takes points, boxes and a mask. A **scribble** (a stroke dragged across the structure, or
across what is not the structure) becomes points sampled along it at an even spacing, all with
the stroke's label. A **lasso** (a closed outline drawn around the structure) becomes a box (its
bounding box) and a mask prompt (its interior).

Coordinates are the slice pixel frame of :mod:`samtune.predict.user_prompts`: ``x`` = column,
``y`` = row, pixel centres at integers. Pure numpy: the effect calls these without a model.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from samtune.errors import ConfigurationError

#: Default distance between the points sampled along a scribble, in pixels.
SCRIBBLE_SPACING = 8.0
#: Most points one scribble contributes (SAM's prompt encoder takes any number; more cost decoder time).
SCRIBBLE_MAX_POINTS = 12


def _polyline(stroke: ArrayLike, what: str, least: int) -> np.ndarray:
    points = np.asarray(stroke, dtype=np.float64).reshape(-1, 2)
    if len(points) < least:
        raise ConfigurationError(f"A {what} needs at least {least} positions, got {len(points)}. Drag further.")
    if not np.isfinite(points).all():
        raise ConfigurationError(f"A {what} holds a position that is not a finite number: {points.tolist()}.")
    return points


def scribble_points(
    stroke: ArrayLike,
    *,
    spacing: float = SCRIBBLE_SPACING,
    max_points: int = SCRIBBLE_MAX_POINTS,
) -> np.ndarray:
    """``(P, 2)`` points spread evenly along a stroke's path, its two ends included.

    A stroke of length ``L`` gets ``1 + L / spacing`` points (at most ``max_points``; the spacing
    widens to fit), so a long stroke does not flood the decoder and a short one still counts.

    Args:
        stroke: ``(N, 2)`` positions the pointer passed, in drawing order.
        spacing: Pixels between points.
        max_points: Most points returned (at least 1).
    """
    if spacing <= 0 or max_points < 1:
        raise ConfigurationError(f"spacing must be > 0 and max_points >= 1, got {spacing} and {max_points}.")
    points = _polyline(stroke, "scribble", 1)
    steps = np.linalg.norm(np.diff(points, axis=0), axis=1)
    along = np.concatenate([[0.0], np.cumsum(steps)])
    length = float(along[-1])
    count = int(min(max_points, 1 + np.floor(length / spacing)))
    if count == 1 or length == 0:
        return points[:1].astype(np.float32)
    targets = np.linspace(0.0, length, count)
    x = np.interp(targets, along, points[:, 0])
    y = np.interp(targets, along, points[:, 1])
    return np.stack([x, y], axis=1).astype(np.float32)


def lasso_mask(outline: ArrayLike, shape: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` boolean mask of the pixels whose centres lie inside a closed outline (even-odd rule).

    The outline closes itself (last position back to the first). Pixels the outline only grazes
    count when their centre is inside.

    Raises:
        ConfigurationError: Fewer than three positions, or an outline enclosing no pixel centre.
    """
    polygon = _polyline(outline, "lasso", 3)
    h, w = (int(v) for v in shape)
    x0, y0 = np.clip(np.floor(polygon.min(axis=0)), 0, [w - 1, h - 1]).astype(int)
    x1, y1 = np.clip(np.ceil(polygon.max(axis=0)), 0, [w - 1, h - 1]).astype(int)
    ys, xs = np.mgrid[y0 : y1 + 1, x0 : x1 + 1]
    inside = np.zeros(xs.shape, dtype=bool)
    start, end = polygon, np.roll(polygon, -1, axis=0)
    for (ax, ay), (bx, by) in zip(start, end):  # one edge at a time, every pixel of the box at once
        crosses = (ay > ys) != (by > ys)
        with np.errstate(divide="ignore", invalid="ignore"):
            at_x = ax + (ys - ay) * (bx - ax) / (by - ay)
        inside ^= crosses & (xs < at_x)
    mask = np.zeros((h, w), dtype=bool)
    mask[y0 : y1 + 1, x0 : x1 + 1] = inside
    if not mask.any():
        raise ConfigurationError(
            "The lasso encloses no pixel of the slice: draw a closed outline around the structure."
        )
    return mask


def mask_bounding_box(mask: np.ndarray) -> np.ndarray:
    """``(4,)`` XYXY box (inclusive pixel indices) around every pixel of a non-empty ``(H, W)`` mask."""
    rows, cols = np.nonzero(mask)
    if len(rows) == 0:
        raise ConfigurationError("An empty mask has no box: the prompt covers no pixel of the slice.")
    return np.array([cols.min(), rows.min(), cols.max(), rows.max()], dtype=np.float32)


__all__ = ["SCRIBBLE_MAX_POINTS", "SCRIBBLE_SPACING", "lasso_mask", "mask_bounding_box", "scribble_points"]
