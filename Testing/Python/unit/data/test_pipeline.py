"""Volume -> slices -> model input -> mask -> volume is exact, on every axis and geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samtune.data import (
    IntensityConfig,
    PixelNorm,
    ResizeLongestSide,
    SliceConfig,
    Volume,
    assemble_slices,
    default_slice_axis,
    extract_slices,
    normalize_intensity,
    normalize_pixels,
    prepare_slices,
    resolve_axis,
    slice_grid,
    slice_spacing,
    three_channels,
)
from samtune.errors import ConfigurationError, DataError


def test_default_axis_is_the_one_with_largest_spacing() -> None:
    thick_k = Volume.from_array(np.zeros((4, 5, 6)), spacing=(0.7, 0.7, 3.0))
    thick_i = Volume.from_array(np.zeros((4, 5, 6)), spacing=(5.0, 0.7, 3.0))
    thick_j = Volume.from_array(np.zeros((4, 5, 6)), spacing=(1.0, 2.0, 1.0))
    iso = Volume.from_array(np.zeros((4, 5, 6)))
    assert default_slice_axis(thick_k) == 0
    assert default_slice_axis(thick_i) == 2
    assert default_slice_axis(thick_j) == 1
    assert default_slice_axis(iso) == 0
    assert resolve_axis(thick_k, "j") == 1 and resolve_axis(thick_k, 2) == 2
    assert slice_spacing(thick_k, 0) == (0.7, 0.7)
    assert slice_spacing(thick_k, 2) == (3.0, 0.7)  # rows are k, columns are j
    with pytest.raises(ConfigurationError, match="Did you mean 'k'"):
        resolve_axis(thick_k, "kk")


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_extract_and_assemble_are_inverse(axis: int) -> None:
    array = np.arange(7 * 33 * 50).reshape(7, 33, 50)
    np.testing.assert_array_equal(assemble_slices(extract_slices(array, axis), axis), array)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_mask_round_trip_is_exact_with_input_geometry(oblique_volume: Volume, oblique_label: Volume, axis: int) -> None:
    """Voxel mask -> model space (nearest) -> back lands on exactly the same voxels."""
    size = 64  # every slice side (7, 33, 50) is upscaled
    grid = slice_grid(oblique_volume, input_size=size, axis=axis)
    reference = oblique_label.array == 1
    slices = extract_slices(reference, axis)
    model_space = grid.resize.pad(grid.resize.apply_mask(slices)[:, None].float())[:, 0]
    assert model_space.shape == (slices.shape[0], size, size)
    assert not model_space[:, grid.resize.new_size[0] :, :].any()  # padding stays empty
    restored = grid.resize.restore_mask(model_space.numpy())
    back = grid.masks_to_volume(restored, range(slices.shape[0]), oblique_volume)
    np.testing.assert_array_equal(back.array, reference.astype(np.uint8))
    assert back.geometry == oblique_volume.geometry and back.shape == oblique_volume.shape


def test_box_drawn_in_model_space_lands_on_the_right_voxels_when_downscaling() -> None:
    h, w = 300, 520  # shrunk to 148 x 256
    resize = ResizeLongestSide(256, (h, w))
    assert resize.new_size == (148, 256)
    # A voxel-space rectangle rows 100..179, columns 200..359 (inclusive), mapped with apply_coords.
    corners = resize.apply_coords(np.array([[200.0, 100.0], [360.0, 180.0]]))
    x0, y0 = np.round(corners[0]).astype(int)
    x1, y1 = np.round(corners[1]).astype(int)
    logits = torch.full((1, 256, 256), -10.0)
    logits[0, y0:y1, x0:x1] = 10.0
    mask = torch.sigmoid(resize.restore_logits(logits))[0].numpy() > 0.5
    rows, cols = np.nonzero(mask)
    assert abs(rows.min() - 100) <= 1 and abs(rows.max() - 179) <= 1
    assert abs(cols.min() - 200) <= 1 and abs(cols.max() - 359) <= 1


def test_low_resolution_logits_restore_like_full_resolution_ones() -> None:
    resize = ResizeLongestSide(256, (100, 200))
    low = torch.zeros(1, 64, 64)
    low[0, 5:20, 10:40] = 10.0
    low[0, low[0] == 0] = -10.0
    full = torch.nn.functional.interpolate(low[None], size=(256, 256), mode="bilinear", align_corners=False)[0]
    np.testing.assert_allclose(resize.restore_logits(low).numpy(), resize.restore_logits(full).numpy(), atol=1e-5)


def test_coordinates_round_trip_exactly() -> None:
    resize = ResizeLongestSide(1024, (37, 91))
    points = np.array([[0.0, 0.0], [90.0, 36.0], [45.5, 12.25]])
    np.testing.assert_allclose(resize.restore_coords(resize.apply_coords(points)), points, rtol=1e-6)
    boxes = resize.apply_boxes(np.array([[10.0, 5.0, 20.0, 30.0]]))
    sx, sy = resize.scale_xy
    np.testing.assert_allclose(boxes, [[10 * sx, 5 * sy, 20 * sx, 30 * sy]], rtol=1e-6)


def test_prepare_slices_for_a_grey_volume(oblique_volume: Volume) -> None:
    images, grid = prepare_slices(
        oblique_volume,
        input_size=128,
        pixel_norm=PixelNorm.MINMAX,
        config=SliceConfig(axis="k"),
        indices=[1, 3],
    )
    assert images.shape == (2, 3, 128, 128)
    nh, nw = grid.resize.new_size
    assert (nh, nw) == (84, 128)  # 33 x 50 scaled by 128 / 50, rounded
    assert torch.equal(images[:, 0], images[:, 1])  # grey repeated into three channels
    assert images[:, :, nh:, :].abs().sum() == 0  # zero padding below the image
    assert images[:, :, :nh].min() >= 0 and images[:, :, :nh].max() == pytest.approx(1.0)
    with pytest.raises(ConfigurationError, match="outside the volume"):
        prepare_slices(oblique_volume, input_size=128, pixel_norm="sam", indices=[7])


def test_rgb_2d_image_through_the_pipeline() -> None:
    rgb = np.zeros((40, 60, 3), dtype=np.uint8)
    rgb[10:30, 20:50] = (200, 30, 90)
    volume = Volume.from_2d(rgb)
    images, grid = prepare_slices(volume, input_size=256, pixel_norm=PixelNorm.SAM)
    assert images.shape == (1, 3, 256, 256)
    # colour channels stay distinct (no grey conversion)
    assert not torch.allclose(images[0, 0, :170], images[0, 1, :170])
    mask = grid.logits_to_masks(torch.where(images[:, :1] > images[:, 1:2], 10.0, -10.0))
    assert mask.shape == (1, 40, 60)
    assert mask[0, 15, 30] and not mask[0, 2, 2]
    with pytest.raises(ConfigurationError, match="2.5D"):
        prepare_slices(volume, input_size=256, pixel_norm="sam", config=SliceConfig(two_and_half_d=True))


def test_two_and_a_half_d_uses_neighbouring_slices() -> None:
    slices = np.arange(4)[:, None, None] * np.ones((4, 2, 3))
    images = three_channels(slices, [0, 2, 3], two_and_half_d=True)
    assert images.shape == (3, 2, 3, 3)
    np.testing.assert_array_equal(images[:, 0, 0], [[0, 0, 1], [1, 2, 3], [2, 3, 3]])


def test_percentile_normalisation_is_volume_wide() -> None:
    array = np.zeros((2, 10, 10), dtype=np.float32)
    array[0] = np.linspace(0, 10, 100).reshape(10, 10)  # dim slice
    array[1] = np.linspace(0, 1000, 100).reshape(10, 10)  # bright slice
    out = normalize_intensity(array, IntensityConfig(mode="percentile"))
    assert out.min() == 0.0 and out.max() == pytest.approx(255.0)
    assert out[0].max() < 10  # the dim slice is not stretched on its own
    window = normalize_intensity(np.array([[[-1000.0, 40.0, 1000.0]]]), IntensityConfig(mode="ct"))
    np.testing.assert_allclose(window[0, 0], [0.0, 127.5, 255.0])
    assert normalize_intensity(np.full((1, 3, 3), 7.0)).max() == 0.0  # constant image, no division by 0


def test_intensity_config_errors() -> None:
    with pytest.raises(ConfigurationError, match="Did you mean 'soft_tissue'"):
        IntensityConfig(mode="ct", ct_preset="soft_tisue")
    with pytest.raises(ConfigurationError, match="window_low and window_high"):
        IntensityConfig(mode="window")
    with pytest.raises(ConfigurationError, match="0 <= low < high <= 100"):
        IntensityConfig(low_percentile=99, high_percentile=1)
    with pytest.raises(DataError, match="NaN"):
        normalize_intensity(np.array([[[np.nan, 1.0]]]))


def test_pixel_normalisations() -> None:
    images = torch.tensor([[[[0.0, 255.0]], [[0.0, 255.0]], [[0.0, 255.0]]]])
    sam = normalize_pixels(images, "sam")
    assert sam[0, 0, 0, 0] == pytest.approx(-123.675 / 58.395)
    minmax = normalize_pixels(images, "minmax")
    assert minmax.min() == 0.0 and minmax.max() == 1.0
    assert normalize_pixels(torch.full((1, 3, 2, 2), 5.0), "minmax").abs().sum() == 0
