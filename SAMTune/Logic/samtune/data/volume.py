"""A voxel array with its physical geometry.

Conventions (the same as SimpleITK and Slicer's ``arrayFromVolume``):

* ``array`` is indexed ``[k, j, i]`` (numpy order, the reverse of the ITK index ``(i, j, k)``);
  shape ``(K, J, I)`` for scalar images, ``(K, J, I, C)`` for vector (e.g. RGB) images.
* ``spacing``, ``origin`` and ``direction`` are in ITK order and in the LPS physical frame used
  by SimpleITK: ``spacing = (sx, sy, sz)`` in mm along ``i, j, k``; ``direction`` is the 3x3 matrix
  whose *columns* are the directions of the ``i, j, k`` axes. The Slicer bridge converts to RAS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from samtune.errors import DataError, GeometryMismatchError, UnsupportedImageError

#: Tolerance for comparing geometries (mm for spacing/origin, unitless for direction).
GEOMETRY_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Geometry:
    """Physical placement of a voxel grid (LPS frame, ITK order).

    Attributes:
        spacing: Voxel size ``(sx, sy, sz)`` in mm, all > 0.
        origin: Physical position of voxel ``(0, 0, 0)`` in mm.
        direction: 3x3 direction cosines, columns are the ``i, j, k`` axes, row-major flattened.
    """

    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    def __post_init__(self) -> None:
        spacing = tuple(float(s) for s in self.spacing)
        origin = tuple(float(o) for o in self.origin)
        direction = tuple(float(d) for d in np.asarray(self.direction, dtype=float).ravel())
        if len(spacing) != 3 or not all(np.isfinite(spacing)) or min(spacing) <= 0:
            raise DataError(
                f"Spacing must be three positive numbers (mm), got {self.spacing}. "
                "Check the image header or pass spacing=(sx, sy, sz)."
            )
        if len(origin) != 3 or not all(np.isfinite(origin)):
            raise DataError(f"Origin must be three finite numbers (mm), got {self.origin}.")
        if len(direction) != 9:
            raise DataError(f"Direction must be a 3x3 matrix (9 numbers), got {len(direction)} numbers.")
        matrix = np.asarray(direction).reshape(3, 3)
        if not np.allclose(matrix.T @ matrix, np.eye(3), atol=1e-3):
            raise DataError(f"Direction must be orthonormal (a rotation, possibly with a flip), got {matrix.tolist()}.")
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "direction", direction)

    @property
    def direction_matrix(self) -> np.ndarray:
        """The 3x3 direction matrix (columns are the i, j, k axes)."""
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    def index_to_physical_matrix(self) -> np.ndarray:
        """4x4 homogeneous matrix mapping ITK index ``(i, j, k, 1)`` to LPS mm."""
        m = np.eye(4)
        m[:3, :3] = self.direction_matrix @ np.diag(self.spacing)
        m[:3, 3] = self.origin
        return m

    def is_close(self, other: Geometry, tolerance: float = GEOMETRY_TOLERANCE) -> bool:
        """Whether two geometries describe the same grid placement within ``tolerance``."""
        return (
            np.allclose(self.spacing, other.spacing, atol=tolerance)
            and np.allclose(self.origin, other.origin, atol=tolerance)
            and np.allclose(self.direction, other.direction, atol=tolerance)
        )


@dataclass(frozen=True)
class Volume:
    """A 3D image (or 2D image as a single slice) with its geometry.

    Attributes:
        array: ``(K, J, I)`` scalar or ``(K, J, I, C)`` vector voxels, numpy order.
        geometry: Placement of the grid in LPS mm.
        metadata: Free-form header entries kept for writing back (e.g. segment names).
    """

    array: np.ndarray
    geometry: Geometry = field(default_factory=Geometry)
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        array = np.asarray(self.array)
        if array.ndim not in (3, 4):
            raise UnsupportedImageError(
                f"Expected a 3D array (K, J, I) or a vector image (K, J, I, C), got shape {array.shape}. "
                "For a 2D image use Volume.from_2d(); a 4D time series must be split into 3D frames first."
            )
        if array.ndim == 4 and array.shape[-1] not in (1, 3, 4):
            raise UnsupportedImageError(
                f"Vector images must have 1, 3 or 4 components, got {array.shape[-1]} (shape {array.shape})."
            )
        if min(array.shape[:3]) < 1:
            raise UnsupportedImageError(f"Image has an empty dimension: shape {array.shape}.")
        object.__setattr__(self, "array", array)

    @classmethod
    def from_array(
        cls,
        array: np.ndarray,
        *,
        spacing: Sequence[float] = (1.0, 1.0, 1.0),
        origin: Sequence[float] = (0.0, 0.0, 0.0),
        direction: Sequence[float] | np.ndarray = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
    ) -> Volume:
        """Wrap a numpy array ``(K, J, I)`` with geometry given in ITK order (LPS)."""
        geometry = Geometry(
            spacing=tuple(spacing),  # type: ignore[arg-type]
            origin=tuple(origin),  # type: ignore[arg-type]
            direction=tuple(np.asarray(direction, dtype=float).ravel()),
        )
        return cls(np.asarray(array), geometry)

    @classmethod
    def from_2d(cls, image: np.ndarray, *, spacing: Sequence[float] = (1.0, 1.0)) -> Volume:
        """Wrap a 2D image ``(H, W)`` or ``(H, W, C)`` as a single-slice volume ``(1, H, W[, C])``."""
        image = np.asarray(image)
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (1, 3, 4)):
            raise UnsupportedImageError(
                f"Expected a 2D grey (H, W) or colour (H, W, C) image, got shape {image.shape}."
            )
        if image.ndim == 3 and image.shape[-1] == 1:
            image = image[..., 0]
        sx, sy = (float(s) for s in spacing)
        return cls(image[None], Geometry(spacing=(sx, sy, 1.0)))

    @property
    def is_vector(self) -> bool:
        """True for multi-component (e.g. RGB) images."""
        return self.array.ndim == 4

    @property
    def shape(self) -> tuple[int, int, int]:
        """Grid shape ``(K, J, I)`` without the component axis."""
        k, j, i = self.array.shape[:3]
        return (int(k), int(j), int(i))

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size ``(sx, sy, sz)`` in mm (ITK order)."""
        return self.geometry.spacing

    def with_array(self, array: np.ndarray) -> Volume:
        """A new volume with the same geometry and ``array`` (which must have the same grid)."""
        array = np.asarray(array)
        if tuple(array.shape[:3]) != self.shape:
            raise GeometryMismatchError(
                f"New array grid {tuple(array.shape[:3])} differs from the volume grid {self.shape}."
            )
        return Volume(array, self.geometry, dict(self.metadata))

    def check_same_grid(self, other: Volume, *, what: str = "label") -> None:
        """Raise :class:`GeometryMismatchError` unless ``other`` has the same grid and geometry.

        Args:
            other: The volume to compare with (typically the label map).
            what: How to call ``other`` in the message.
        """
        if other.shape != self.shape:
            raise GeometryMismatchError(
                f"The {what} has grid size {other.shape[::-1]} (i, j, k) but the image has "
                f"{self.shape[::-1]}. Resample the {what} onto the image grid (in Slicer: "
                "Segmentations > Export to labelmap with the image as reference geometry)."
            )
        if not self.geometry.is_close(other.geometry):
            raise GeometryMismatchError(
                f"The {what} and the image have the same size but different geometry "
                f"(image spacing {self.geometry.spacing}, origin {self.geometry.origin}; "
                f"{what} spacing {other.geometry.spacing}, origin {other.geometry.origin}). "
                f"Resample the {what} onto the image grid."
            )


def require_integer_labels(array: np.ndarray, *, source: str = "label map") -> np.ndarray:
    """Return ``array`` as an integer array, or raise if it holds non-integer values.

    Args:
        array: Candidate label map.
        source: How to name it in the error message (e.g. a file name).

    Raises:
        LabelError: If values are not whole numbers or are negative.
    """
    from samtune.errors import LabelError

    array = np.asarray(array)
    if array.dtype.kind in "iub":
        out = array.astype(np.int64, copy=False)
    elif array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.all(np.equal(np.mod(array, 1), 0)):
            raise LabelError(
                f"The {source} contains non-integer values (dtype {array.dtype}); a label map must hold "
                "whole numbers (0 = background, 1..N = structures). Did you pass the image instead of "
                "the label?"
            )
        out = array.astype(np.int64)
    else:
        raise LabelError(f"The {source} has unsupported dtype {array.dtype}; expected integers.")
    if out.size and out.min() < 0:
        raise LabelError(f"The {source} contains negative values (min {out.min()}); expected 0..N.")
    return out
