"""Segmentation metrics on foreground only (background never inflates a score)."""

from __future__ import annotations

import numpy as np

from samtune.errors import GeometryMismatchError


def dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    """Foreground Dice ``2|P∩R| / (|P| + |R|)`` of two masks of the same shape.

    Nonzero voxels are foreground. Two empty masks agree perfectly (1.0); one empty and one not
    score 0.0.

    Raises:
        GeometryMismatchError: If the shapes differ.
    """
    p = np.asarray(prediction) != 0
    r = np.asarray(reference) != 0
    if p.shape != r.shape:
        raise GeometryMismatchError(f"Cannot compare masks of shapes {p.shape} and {r.shape}.")
    total = int(p.sum()) + int(r.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, r).sum()) / total
