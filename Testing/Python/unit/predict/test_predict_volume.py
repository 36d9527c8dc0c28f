"""Whole-volume prediction with a tiny model: geometry, ranges, prompts, batching, bad options."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samtune.data import SliceConfig, Volume, make_phantom
from samtune.errors import ConfigurationError
from samtune.models import SamModel, build_model
from samtune.predict import PredictConfig, SlicePrompt, box_prompts_from_ijk, predict_volume


@pytest.fixture(scope="module")
def tiny() -> SamModel:
    torch.manual_seed(0)
    return build_model("sam_vit_b", tiny=True)


@pytest.fixture(scope="module")
def phantom() -> tuple[Volume, Volume]:
    return make_phantom(
        shape=(6, 40, 52), spacing=(0.8, 0.9, 3.0), origin=(5, 6, 7), direction=(0, 1, 0, 1, 0, 0, 0, 0, -1)
    )


def test_automatic_prediction_keeps_grid_and_geometry(tiny: SamModel, phantom: tuple[Volume, Volume]) -> None:
    image, _ = phantom
    calls: list[tuple[int, int]] = []
    label = predict_volume(tiny, image, PredictConfig(batch_size=4), progress=lambda d, t, m: calls.append((d, t)))
    assert label.shape == image.shape and label.geometry == image.geometry
    assert label.array.dtype == np.uint8 and set(np.unique(label.array)) <= {0, 1}
    assert calls == [(4, 6), (6, 6)]


def test_batch_size_does_not_change_the_result(tiny: SamModel, phantom: tuple[Volume, Volume]) -> None:
    """Slices encoded together give the masks of slices encoded one by one.

    Two empty (or two full) results would agree whatever batching did, so the masks compared must hold
    foreground and background on every prompted slice: with the box below, the fixture's tiny model
    (seed 0) marks part of each slice at threshold 0.5 (about 550 of 2080 pixels).
    """
    image, _ = phantom
    prompts = box_prompts_from_ijk([(10, 8, 1, 40, 30, 4)], axis=0, shape=image.shape)
    one = predict_volume(tiny, image, PredictConfig(batch_size=1, threshold=0.5), prompts=prompts)
    three = predict_volume(tiny, image, PredictConfig(batch_size=3, threshold=0.5), prompts=prompts)
    for k in sorted(prompts):  # slices 1..4; 4 slices in batches of 3 leave a partial last batch
        assert one.array[k].any() and not one.array[k].all(), f"slice {k}: nothing to compare"
    assert not one.array[[0, 5]].any()  # slices without a prompt stay empty
    np.testing.assert_array_equal(one.array, three.array)


def test_prompted_mode_touches_only_prompted_slices(tiny: SamModel, phantom: tuple[Volume, Volume]) -> None:
    image, _ = phantom
    # threshold just above 0 makes a random tiny model mark plenty of pixels
    config = PredictConfig(threshold=0.01, label_value=7)
    prompts = {
        2: SlicePrompt(boxes=np.array([[5.0, 5.0, 30.0, 25.0]])),
        4: SlicePrompt(points=[[10, 10]], point_labels=[1]),
    }
    label = predict_volume(tiny, image, config, prompts=prompts)
    touched = {k for k in range(image.shape[0]) if label.array[k].any()}
    assert touched <= {2, 4} and touched
    assert set(np.unique(label.array)) <= {0, 7}


def test_slice_range_limits_the_work(tiny: SamModel, phantom: tuple[Volume, Volume]) -> None:
    image, _ = phantom
    seen: list[int] = []
    predict_volume(tiny, image, PredictConfig(slice_range=(1, 3)), progress=lambda d, t, m: seen.append(t))
    assert seen == [2, 2]  # two slices, one batch each


def test_other_axes_and_2_5d(tiny: SamModel, phantom: tuple[Volume, Volume]) -> None:
    image, _ = phantom
    for axis in ("i", "j"):
        label = predict_volume(tiny, image, PredictConfig(slices=SliceConfig(axis=axis, two_and_half_d=True)))
        assert label.shape == image.shape


def test_bad_prediction_options(tiny: SamModel, phantom: tuple[Volume, Volume]) -> None:
    image, _ = phantom
    with pytest.raises(ConfigurationError, match="strictly between 0 and 1"):
        PredictConfig(threshold=1.0)
    with pytest.raises(ConfigurationError, match="batch_size"):
        PredictConfig(batch_size=0)
    with pytest.raises(ConfigurationError, match="slice_range"):
        PredictConfig(slice_range=(5, 2))
    with pytest.raises(ConfigurationError, match="only 6 slices"):
        predict_volume(tiny, image, PredictConfig(slice_range=(10, 12)))
    with pytest.raises(ConfigurationError, match="outside the volume"):
        predict_volume(tiny, image, prompts={9: SlicePrompt(points=[[1, 1]], point_labels=[1])})
