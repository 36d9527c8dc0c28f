"""Largest-component post-processing: islands go, the structure stays, empty stays empty."""

from __future__ import annotations

import numpy as np

from samtune.data import make_phantom
from samtune.models import build_tiny_model
from samtune.predict import PredictConfig, keep_largest_component, predict_volume


def test_keeps_only_the_largest_face_connected_component():
    mask = np.zeros((6, 20, 20), dtype=np.uint8)
    mask[1:5, 5:12, 5:12] = 1  # the structure: 4 x 7 x 7 = 196 voxels
    mask[0, 0:2, 0:2] = 1  # an island on another slice
    mask[5, 18:20, 18:20] = 1  # an island touching the structure only diagonally is separate
    mask[4, 12, 12] = 1  # edge-touching (not face-touching) voxel: separate
    kept = keep_largest_component(mask)
    assert kept.dtype == bool and kept.shape == mask.shape
    assert kept.sum() == 196 and kept[1:5, 5:12, 5:12].all()
    assert not kept[0, 0, 0] and not kept[5, 19, 19] and not kept[4, 12, 12]
    assert not keep_largest_component(np.zeros((3, 4, 4))).any()
    two_d = np.zeros((8, 8), bool)
    two_d[0:2, 0:2] = True
    two_d[4:8, 4:8] = True
    assert keep_largest_component(two_d).sum() == 16


def test_predict_volume_applies_it_to_the_whole_label_volume():
    model = build_tiny_model("litemedsam", seed=3).eval()
    image, _ = make_phantom(shape=(8, 40, 48), seed=2)
    raw = predict_volume(model, image, PredictConfig(threshold=0.45)).array
    cleaned = predict_volume(model, image, PredictConfig(threshold=0.45, largest_component=True)).array
    assert raw.any() and cleaned.dtype == raw.dtype
    assert np.array_equal(cleaned > 0, keep_largest_component(raw))
    assert set(np.unique(cleaned)) <= {0, 1}
