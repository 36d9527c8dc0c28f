"""Dice, NSD and HD95 agree with MONAI's implementations (monai.metrics, a test-only dependency) on random
blobs and hand-made masks with anisotropic spacing."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai import metrics as monai_metrics

from samtune.metrics import dice, hausdorff_95, normalized_surface_dice

SPACING = (2.5, 0.8, 1.1)  # numpy order (k, j, i): anisotropic, as an MR volume


def _blob(seed: int, shape=(12, 40, 36), threshold=0.6) -> np.ndarray:
    noise = sitk.GetImageFromArray(np.random.default_rng(seed).random(shape))
    smooth = sitk.GetArrayFromImage(sitk.DiscreteGaussian(noise, variance=[9.0, 9.0, 1.0]))  # (i, j, k) order
    mask = smooth > np.quantile(smooth, threshold)
    mask[0], mask[-1], mask[:, 0], mask[:, -1], mask[:, :, 0], mask[:, :, -1] = (False,) * 6  # off the border
    return mask


def _monai(function, p: np.ndarray, r: np.ndarray, **kwargs) -> float:
    tensor = lambda m: torch.from_numpy(m[None, None].astype(np.float32))  # noqa: E731 - (B, C, spatial)
    return float(function(tensor(p), tensor(r), include_background=True, **kwargs).reshape(-1)[0])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_blobs_score_the_same_as_monai(seed: int):
    p, r = _blob(seed), _blob(seed + 10)
    assert dice(p, r) == pytest.approx(_monai(monai_metrics.compute_dice, p, r), abs=1e-6)
    for tolerance in (1.0, 2.5):
        ours = normalized_surface_dice(p, r, spacing=SPACING, tolerance_mm=tolerance)
        theirs = _monai(monai_metrics.compute_surface_dice, p, r, class_thresholds=[tolerance], spacing=SPACING)
        assert ours == pytest.approx(theirs, abs=1e-6)
    theirs = _monai(monai_metrics.compute_hausdorff_distance, p, r, percentile=95, spacing=SPACING)
    assert hausdorff_95(p, r, spacing=SPACING) == pytest.approx(theirs, abs=1e-5)


def test_hand_made_cubes_give_the_hand_computed_scores():
    p = np.zeros((10, 12, 12), dtype=bool)
    r = np.zeros_like(p)
    p[2:6, 3:7, 3:7] = True  # 4 x 4 x 4 voxels
    r[2:6, 3:7, 5:9] = True  # the same cube, 2 voxels further along i
    assert dice(p, r) == pytest.approx(2 * 32 / 128)  # they share 4 x 4 x 2 voxels
    # every surface voxel is within 2 voxels along i (2.2 mm) of the other surface, and some need all of it
    assert hausdorff_95(p, r, spacing=SPACING) == pytest.approx(2.2)
    assert hausdorff_95(p, r, spacing=SPACING) == pytest.approx(
        _monai(monai_metrics.compute_hausdorff_distance, p, r, percentile=95, spacing=SPACING), abs=1e-6
    )
    assert normalized_surface_dice(p, r, spacing=SPACING, tolerance_mm=2.21) == pytest.approx(1.0)
    assert normalized_surface_dice(p, r, spacing=SPACING, tolerance_mm=1.5) == pytest.approx(80 / 112)  # 16 + 16 at 2.2
    assert normalized_surface_dice(p, r, spacing=SPACING, tolerance_mm=2.5) == pytest.approx(
        _monai(monai_metrics.compute_surface_dice, p, r, class_thresholds=[2.5], spacing=SPACING), abs=1e-6
    )
