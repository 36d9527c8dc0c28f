"""Cutting a ``[k, j, i]`` volume into 2D slices along one axis, and putting them back.

numpy axis 0 is ``k``, 1 is ``j``, 2 is ``i``; ITK spacing ``(sx, sy, sz)`` belongs to numpy axes
``(2, 1, 0)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from samtune.config_io import option
from samtune.data.intensity import IntensityConfig
from samtune.data.volume import Volume
from samtune.enums import StrEnum
from samtune.errors import ConfigurationError


class SliceAxis(StrEnum):
    """Which axis to slice along; ``auto`` = the axis with the largest spacing."""

    AUTO = "auto"
    K = "k"
    J = "j"
    I = "i"  # noqa: E741 - the ITK index name


_AXIS_OF = {"k": 0, "j": 1, "i": 2}


def default_slice_axis(volume: Volume) -> int:
    """numpy axis with the largest voxel spacing (the acquisition axis); ties prefer ``k``.

    A grid one voxel thick along an axis (a 2D picture, a single slice) is sliced across that axis,
    whatever its spacing: a picture of 2 mm pixels is one slice, not a stack of one-pixel rows.
    """
    flat = [a for a, n in enumerate(volume.shape) if n == 1]
    if flat and len(flat) < 3:
        return flat[0]
    sx, sy, sz = volume.spacing
    by_axis = [sz, sy, sx]
    return int(np.argmax(by_axis))  # argmax returns the first maximum: k before j before i


def resolve_axis(volume: Volume, axis: str | int) -> int:
    """numpy axis index for ``axis`` (``auto``, ``k``, ``j``, ``i`` or 0/1/2)."""
    if isinstance(axis, (int, np.integer)) and not isinstance(axis, bool):
        if int(axis) not in (0, 1, 2):
            raise ConfigurationError(f"Slice axis must be 0 (k), 1 (j) or 2 (i), got {axis}.")
        return int(axis)
    parsed = SliceAxis.parse(axis, what="slice axis")
    if parsed is SliceAxis.AUTO:
        return default_slice_axis(volume)
    return _AXIS_OF[parsed.value]


def slice_index(ijk: Sequence[float], axis: int) -> int:
    """The slice along numpy ``axis`` that holds continuous voxel position ``ijk = (i, j, k)`` (rounded).

    numpy axis ``a`` is ITK index component ``2 - a``. The one conversion from voxels to slices: the
    prompt book, the predictor session and the Slicer effect all use it.
    """
    if axis not in (0, 1, 2):
        raise ConfigurationError(f"axis must be a numpy axis 0, 1 or 2, got {axis!r}.")
    return int(round(float(ijk[2 - axis])))


def in_plane_components(axis: int) -> tuple[int, int]:
    """ITK index components ``(x, y)`` shown as the column and the row of a slice cut along numpy ``axis``.

    Slicing numpy axis ``axis`` of a ``[k, j, i]`` array leaves the other two numpy axes in order;
    the last one is the column (x).
    """
    row_axis, col_axis = (a for a in (0, 1, 2) if a != axis)
    return 2 - col_axis, 2 - row_axis


def extract_slices(array: np.ndarray, axis: int) -> np.ndarray:
    """``(K, J, I[, C])`` -> ``(N, H, W[, C])`` slices along numpy ``axis`` (a view, no copy)."""
    return np.moveaxis(np.asarray(array), axis, 0)


def assemble_slices(slices: np.ndarray, axis: int) -> np.ndarray:
    """Exact inverse of :func:`extract_slices`."""
    return np.moveaxis(np.asarray(slices), 0, axis)


def slice_spacing(volume: Volume, axis: int) -> tuple[float, float]:
    """In-plane pixel size ``(row_mm, col_mm)`` of slices cut along numpy ``axis``."""
    by_axis = (volume.spacing[2], volume.spacing[1], volume.spacing[0])
    row_axis, col_axis = (a for a in (0, 1, 2) if a != axis)
    return by_axis[row_axis], by_axis[col_axis]


@dataclass
class SliceConfig:
    """How to turn a volume into 2D model inputs.

    Attributes:
        axis: ``auto`` (largest spacing), ``k``, ``j``, ``i`` or a numpy axis 0/1/2.
        intensity: Intensity normalisation.
        two_and_half_d: Use slices ``s-1, s, s+1`` as the three channels (edges replicated).
    """

    axis: str | int = option("auto", help="slice axis: auto (largest spacing), k, j or i")
    intensity: IntensityConfig = field(default_factory=IntensityConfig)
    two_and_half_d: bool = option(False, help="use slices z-1, z, z+1 as the three channels")
