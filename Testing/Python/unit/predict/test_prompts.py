"""Prompts in voxel coordinates land on the right slices and pixel positions."""

from __future__ import annotations

import numpy as np
import pytest

from samtune.errors import ConfigurationError
from samtune.predict import (
    SlicePrompt,
    box_prompts_from_ijk,
    boxes_from_label,
    merge_prompts,
    point_prompts_from_ijk,
)


def test_3d_box_covers_each_slice_of_its_k_range_along_axis_k() -> None:
    prompts = box_prompts_from_ijk([(3, 4, 2, 9, 11, 4)], axis=0, shape=(6, 20, 30))
    assert sorted(prompts) == [2, 3, 4]
    # On a k-slice the columns are i and the rows are j.
    np.testing.assert_array_equal(prompts[3].boxes, [[3, 4, 9, 11]])


def test_3d_box_along_axis_i_uses_j_as_columns_and_k_as_rows() -> None:
    prompts = box_prompts_from_ijk([(5, 2, 1, 6, 7, 3)], axis=2, shape=(6, 20, 30))
    assert sorted(prompts) == [5, 6]
    np.testing.assert_array_equal(prompts[5].boxes, [[2, 1, 7, 3]])


def test_3d_box_along_axis_j_uses_i_as_columns_and_k_as_rows() -> None:
    prompts = box_prompts_from_ijk([(5, 2, 1, 6, 2, 3)], axis=1, shape=(6, 20, 30))
    assert sorted(prompts) == [2]
    np.testing.assert_array_equal(prompts[2].boxes, [[5, 1, 6, 3]])


def test_box_outside_volume_or_reversed_is_rejected_with_the_valid_range() -> None:
    with pytest.raises(ConfigurationError, match="outside the volume"):
        box_prompts_from_ijk([(0, 0, 0, 30, 5, 1)], axis=0, shape=(6, 20, 30))
    with pytest.raises(ConfigurationError, match="upper bound below lower"):
        box_prompts_from_ijk([(5, 0, 0, 2, 5, 1)], axis=0, shape=(6, 20, 30))
    with pytest.raises(ConfigurationError, match="6 numbers"):
        box_prompts_from_ijk([(5, 0, 0, 2)], axis=0, shape=(6, 20, 30))


def test_points_are_placed_on_their_slice_with_labels() -> None:
    prompts = point_prompts_from_ijk([(7, 8, 2), (1, 2, 2), (4, 4, 5)], [1, 0, 1], axis=0)
    assert sorted(prompts) == [2, 5]
    np.testing.assert_array_equal(prompts[2].points, [[7, 8], [1, 2]])
    np.testing.assert_array_equal(prompts[2].point_labels, [1, 0])


def test_merge_joins_boxes_and_points_on_the_same_slice() -> None:
    boxes = box_prompts_from_ijk([(0, 0, 1, 5, 5, 2)], axis=0, shape=(4, 10, 10))
    points = point_prompts_from_ijk([(2, 2, 2)], [1], axis=0)
    merged = merge_prompts(boxes, points)
    assert sorted(merged) == [1, 2]
    assert len(merged[2].boxes) == 1 and len(merged[2].points) == 1
    assert len(merged[1].points) == 0


def test_slice_prompt_validation() -> None:
    with pytest.raises(ConfigurationError, match="point labels"):
        SlicePrompt(points=np.zeros((2, 2)), point_labels=np.ones(1))
    with pytest.raises(ConfigurationError, match="1 \\(inside\\) or 0"):
        SlicePrompt(points=np.zeros((1, 2)), point_labels=np.array([2]))
    with pytest.raises(ConfigurationError, match="x1 >= x0"):
        SlicePrompt(boxes=np.array([[5, 0, 2, 3]]))
    assert SlicePrompt().is_empty


def test_boxes_from_label_are_tight_and_skip_empty_slices() -> None:
    label = np.zeros((3, 10, 12), dtype=np.uint8)
    label[1, 2:5, 3:9] = 1
    prompts = boxes_from_label(label, axis=0)
    assert list(prompts) == [1]
    np.testing.assert_array_equal(prompts[1].boxes, [[3, 2, 8, 4]])
    wide = boxes_from_label(label, axis=0, margin=5)
    np.testing.assert_array_equal(wide[1].boxes, [[0, 0, 11, 9]])
