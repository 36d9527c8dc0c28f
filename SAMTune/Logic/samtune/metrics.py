"""Segmentation metrics on foreground only (background never inflates a score)."""

from __future__ import annotations

import numpy as np

from samtune.errors import ConfigurationError, GeometryMismatchError


def dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    """Foreground Dice ``2|P∩R| / (|P| + |R|)`` of two masks of the same shape.

    Nonzero voxels are foreground. Two empty masks agree perfectly (1.0); one empty and one not
    score 0.0.

    Raises:
        GeometryMismatchError: If the shapes differ.
    """
    p, r = _masks(prediction, reference)
    total = int(p.sum()) + int(r.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, r).sum()) / total


def normalized_surface_dice(
    prediction: np.ndarray, reference: np.ndarray, *, spacing: tuple[float, ...], tolerance_mm: float = 1.0
) -> float:
    """Normalised surface Dice (NSD): share of both surfaces within ``tolerance_mm`` of the other.

    Args:
        prediction: 2D or 3D mask (numpy order).
        reference: Mask of the same shape.
        spacing: Voxel size in mm per numpy axis (``(row, col)`` or ``(k, j, i)``).
        tolerance_mm: Distance within which surfaces count as agreeing.

    Returns:
        In [0, 1]; 1.0 when both masks are empty, 0.0 when exactly one is.
    """
    if not tolerance_mm > 0:
        raise ConfigurationError(f"The NSD tolerance must be a positive number of mm, got {tolerance_mm}.")
    p, r = _masks(prediction, reference)
    if not p.any() and not r.any():
        return 1.0
    if not p.any() or not r.any():
        return 0.0

    p_surface, p_distance = _surface_and_distance(p, spacing)
    r_surface, r_distance = _surface_and_distance(r, spacing)
    if not p_surface.any() and not r_surface.any():  # both fill the whole grid (the border is no surface)
        return 1.0 if np.array_equal(p, r) else 0.0
    close_p = np.count_nonzero(r_distance[p_surface] <= tolerance_mm)
    close_r = np.count_nonzero(p_distance[r_surface] <= tolerance_mm)
    return (close_p + close_r) / (np.count_nonzero(p_surface) + np.count_nonzero(r_surface))


def _masks(prediction: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(prediction) != 0
    r = np.asarray(reference) != 0
    if p.shape != r.shape:
        raise GeometryMismatchError(f"Cannot compare masks of shapes {p.shape} and {r.shape}.")
    return p, r


def _surface_and_distance(mask: np.ndarray, spacing: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The mask's surface voxels and every voxel's distance (mm) to that surface."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing(tuple(float(s) for s in spacing[::-1]))
    contour_image = sitk.LabelContour(image, fullyConnected=False)
    contour = sitk.GetArrayFromImage(contour_image) != 0
    distance = sitk.GetArrayFromImage(
        sitk.Abs(
            sitk.SignedMaurerDistanceMap(
                sitk.Cast(contour_image, sitk.sitkUInt8), squaredDistance=False, useImageSpacing=True
            )
        )
    )
    return contour, distance


def hausdorff_95(prediction: np.ndarray, reference: np.ndarray, *, spacing: tuple[float, ...]) -> float:
    """Robust Hausdorff distance in mm (HD95): the larger of the two directed 95th percentiles.

    The 95th percentile of the prediction's surface distances to the reference's surface, and of
    the reference's to the prediction's; the larger one. This is the definition of MONAI
    (``compute_hausdorff_distance(percentile=95)``) and of DeepMind's surface-distance library, so
    figures compare with published ones (pooling both sets before the percentile, as SAMTune did
    before, gives a smaller value when one side has the outliers). Two empty masks give 0.0; exactly
    one empty mask gives ``inf`` (no surface to measure against).
    """
    p, r = _masks(prediction, reference)
    if not p.any() and not r.any():
        return 0.0
    if not p.any() or not r.any():
        return float("inf")
    p_surface, p_distance = _surface_and_distance(p, spacing)
    r_surface, r_distance = _surface_and_distance(r, spacing)
    if not p_surface.any() or not r_surface.any():  # a mask filling the whole grid has no surface to measure
        return 0.0 if np.array_equal(p, r) else float("inf")
    return float(max(np.percentile(r_distance[p_surface], 95), np.percentile(p_distance[r_surface], 95)))
