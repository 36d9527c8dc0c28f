"""Label handling, case-level splits and the synthetic phantom."""

from __future__ import annotations

import numpy as np
import pytest

from samtune.data import (
    EmptySlicePolicy,
    labelled_slices_from_label,
    make_phantom,
    select_slices,
    split_cases,
    structure_masks,
    validate_structures,
)
from samtune.errors import ConfigurationError, DataError, LabelError


def test_structure_masks_and_validation() -> None:
    label = np.zeros((2, 4, 4), dtype=np.int64)
    label[0, :2, :2] = 1
    label[1, 2:, 2:] = 3
    masks = structure_masks(label, {"liver": 1, "kidney": 3})
    assert masks["liver"].sum() == 4 and masks["kidney"].sum() == 4
    validate_structures(label, {"liver": 1})
    with pytest.raises(LabelError, match="'spleen' \\(label value 2\\).*values present: \\[1, 3\\]"):
        validate_structures(label, {"spleen": 2})
    with pytest.raises(LabelError, match="empty"):
        validate_structures(np.zeros((2, 2, 2)), {"x": 1})
    with pytest.raises(LabelError, match="Every voxel"):
        validate_structures(np.ones((2, 2, 2)), {"x": 1})


def test_sparse_labels_never_turn_unpainted_slices_into_background() -> None:
    masks = np.zeros((10, 4, 4), dtype=bool)
    masks[[2, 5], 1, 1] = True  # the clinician painted slices 2 and 5
    painted = labelled_slices_from_label(masks, axis=0)
    np.testing.assert_array_equal(np.flatnonzero(painted), [2, 5])
    assert list(select_slices(masks, labelled=painted, policy="keep_all")) == [2, 5]
    marked_empty = painted.copy()
    marked_empty[8] = True  # ...and marked slice 8 as "nothing here"
    assert list(select_slices(masks, labelled=marked_empty, policy="keep_all")) == [2, 5, 8]


def test_fully_labelled_cases_keep_a_seeded_fraction_of_empty_slices() -> None:
    masks = np.zeros((22, 3, 3), dtype=bool)
    masks[:2, 0, 0] = True  # 2 foreground slices, 20 empty ones
    kept = select_slices(masks, policy=EmptySlicePolicy.KEEP_FRACTION, keep_fraction=0.1, seed=3)
    assert len(kept) == 4 and {0, 1} <= set(kept)
    assert list(kept) == list(select_slices(masks, keep_fraction=0.1, seed=3))  # deterministic
    assert list(select_slices(masks, policy="drop")) == [0, 1]
    with pytest.raises(ConfigurationError, match="keep_fraction"):
        select_slices(masks, keep_fraction=1.5)


def test_split_is_deterministic_order_independent_and_disjoint() -> None:
    ids = [f"case{i:02d}" for i in range(10)]
    train, val = split_cases(ids, val_fraction=0.3, seed=7)
    train2, val2 = split_cases(list(reversed(ids)), val_fraction=0.3, seed=7)
    assert (train, val) == (train2, val2)
    assert len(val) == 3 and not set(train) & set(val) and sorted(train + val) == ids
    assert split_cases(ids, val_fraction=0.3, seed=8) != (train, val)
    assert split_cases(["a"], val_fraction=0.0) == (["a"], [])
    with pytest.raises(DataError, match="at least two labelled cases"):
        split_cases(["only"], val_fraction=0.2)
    with pytest.raises(ConfigurationError, match="unique"):
        split_cases(["a", "a"])


def test_phantom_is_deterministic_and_looks_like_a_scan() -> None:
    image, label = make_phantom(seed=4, shape=(12, 64, 64))
    again, label_again = make_phantom(seed=4, shape=(12, 64, 64))
    other, _ = make_phantom(seed=5, shape=(12, 64, 64))
    np.testing.assert_array_equal(image.array, again.array)
    np.testing.assert_array_equal(label.array, label_again.array)
    assert not np.array_equal(image.array, other.array)
    assert image.geometry == label.geometry and image.shape == (12, 64, 64)
    middle = label.array[6] == 1
    assert 0.05 < middle.mean() < 0.25  # the target fills a fair part of the middle slice
    assert label.array[0].sum() < middle.sum()  # and shrinks towards the ends
    inside, outside = image.array[6][middle].mean(), image.array[6][~middle].mean()
    assert inside > outside + 100  # visible contrast


def test_ct_phantom_is_in_hounsfield_units_with_two_structures() -> None:
    image, label = make_phantom(modality="ct", structures=2, shape=(10, 48, 48), seed=1)
    assert image.array.min() < -900 and set(np.unique(label.array)) == {0, 1, 2}
    with pytest.raises(ConfigurationError, match="modality"):
        make_phantom(modality="pet")


def test_validation_keeps_a_case_that_shows_the_structure() -> None:
    ids = [f"picture{n}" for n in range(8)]
    positives = ids[:2]  # six lesion-free pictures, two with a lesion
    for seed in range(20):
        plain_train, plain_val = split_cases(ids, val_fraction=0.25, seed=seed)
        train, val = split_cases(ids, val_fraction=0.25, seed=seed, positives=positives)
        assert len(val) == 2 and set(train) | set(val) == set(ids) and not set(train) & set(val)
        assert set(val) & set(positives) and set(train) & set(positives)  # each side sees a lesion
        if set(plain_val) & set(positives) and set(plain_train) & set(positives):
            assert (train, val) == (plain_train, plain_val)  # unchanged where both sides already had one
