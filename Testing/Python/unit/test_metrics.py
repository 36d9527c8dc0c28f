"""Foreground Dice on hand-computable masks."""

from __future__ import annotations

import numpy as np
import pytest

from samtune.errors import GeometryMismatchError
from samtune.metrics import dice, hausdorff_95


def test_dice_hand_computed() -> None:
    a = np.zeros((4, 4), dtype=bool)
    b = np.zeros((4, 4), dtype=bool)
    a[0, :2] = True  # 2 voxels
    b[0, 1:4] = True  # 3 voxels, 1 shared
    assert dice(a, b) == pytest.approx(2 * 1 / 5)


def test_dice_ignores_background_and_handles_empty_masks() -> None:
    empty = np.zeros((3, 3))
    full = np.ones((3, 3))
    assert dice(empty, empty) == 1.0
    assert dice(empty, full) == 0.0
    assert dice(full * 2, full) == 1.0  # any nonzero value is foreground


def test_dice_shape_mismatch() -> None:
    with pytest.raises(GeometryMismatchError):
        dice(np.zeros((2, 2)), np.zeros((2, 3)))


def test_hd95_of_a_shifted_square_is_the_shift_in_mm() -> None:
    a = np.zeros((40, 40), dtype=bool)
    a[10:20, 10:20] = True
    b = np.roll(a, 3, axis=1)  # shifted 3 columns
    # Every column-facing surface voxel is 3 columns away; rows in between are closer. With 0.5 mm
    # columns the largest distance is 1.5 mm, and the 95th percentile lies at it.
    assert hausdorff_95(a, b, spacing=(1.0, 0.5)) == pytest.approx(1.5)
    assert hausdorff_95(a, a, spacing=(1.0, 1.0)) == 0.0
    assert hausdorff_95(a, np.zeros_like(a), spacing=(1.0, 1.0)) == float("inf")
    assert hausdorff_95(np.zeros_like(a), np.zeros_like(a), spacing=(1.0, 1.0)) == 0.0
