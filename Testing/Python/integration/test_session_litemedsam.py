"""Real LiteMedSAM in a predictor session: a box on one slice, propagated through a phantom, stops where
the structure ends."""

from __future__ import annotations

import numpy as np
import pytest

from samtune.data import make_phantom
from samtune.metrics import dice
from samtune.models import build_model
from samtune.predict import SlicePrompt, boxes_from_label
from samtune.predict.session import PredictorSession

pytestmark = pytest.mark.slow


def test_propagation_follows_the_structure_and_stops_at_its_end():
    image, label = make_phantom(shape=(16, 96, 96), seed=3)
    present = np.flatnonzero(label.array.reshape(16, -1).any(axis=1))
    first, last = int(present.min()), int(present.max())
    assert first > 0 or last < 15, "the phantom's structure must end inside the volume for this test"
    start = (first + last) // 2
    session = PredictorSession(build_model("litemedsam"), image, axis="k")
    box = boxes_from_label(label.array, axis=0)[start]
    seed_mask = session.predict_slice(start, SlicePrompt(boxes=box.boxes))
    assert dice(seed_mask, label.array[start] > 0) > 0.85
    up = session.propagate(start, seed_mask, direction=1)
    down = session.propagate(start, seed_mask, direction=-1)
    reached = sorted([*down, start, *up])
    assert abs(reached[0] - first) <= 1 and abs(reached[-1] - last) <= 1, (reached, first, last)
    result = np.zeros(label.array.shape, bool)
    result[start] = seed_mask
    for s, mask in {**up, **down}.items():
        result[s] = mask
    assert dice(result, label.array > 0) > 0.8
