"""Volumes with non-trivial geometry shared by the data tests."""

from __future__ import annotations

import numpy as np
import pytest

from samtune.data import Volume


def rotation_with_flip(degrees: float = 30.0) -> tuple[float, ...]:
    """Rotation about z by ``degrees`` followed by a flip of the first axis (still orthonormal)."""
    a = np.deg2rad(degrees)
    rot = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    flip = np.diag([-1.0, 1.0, 1.0])
    return tuple((rot @ flip).ravel())


@pytest.fixture()
def oblique_volume() -> Volume:
    rng = np.random.default_rng(0)
    array = rng.normal(100, 20, size=(7, 33, 50)).astype(np.float32)
    return Volume.from_array(array, spacing=(0.7, 0.9, 2.5), origin=(10.0, -20.0, 30.0), direction=rotation_with_flip())


@pytest.fixture()
def oblique_label(oblique_volume: Volume) -> Volume:
    label = np.zeros(oblique_volume.shape, dtype=np.uint8)
    label[2:5, 10:20, 15:40] = 1
    label[3, 22:30, 5:9] = 2
    return oblique_volume.with_array(label)
