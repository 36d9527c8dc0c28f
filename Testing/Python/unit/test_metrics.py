"""Foreground Dice on hand-computable masks."""

from __future__ import annotations

import numpy as np
import pytest

from samtune.errors import GeometryMismatchError
from samtune.metrics import dice


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
