"""Coarse-to-fine slice search: finds every run of slices touched by a sampled slice, segments them
exactly as a full pass does, and skips the rest."""

from __future__ import annotations

import numpy as np
import pytest

from samtune.data import make_phantom
from samtune.errors import ConfigurationError
from samtune.models import build_tiny_model
from samtune.predict import PredictConfig, predict_volume, search_slices


def _searcher(foreground: set[int]):
    calls: list[list[int]] = []

    def segment(batch: list[int]) -> list[bool]:
        calls.append(list(batch))
        return [s in foreground for s in batch]

    return segment, calls


@pytest.mark.parametrize("step", [2, 3, 4, 8])
def test_finds_each_run_that_a_sample_touches(step):
    structure = set(range(21, 47))  # one run, longer than the step
    segment, calls = _searcher(structure)
    done = search_slices(list(range(88)), step, segment, batch_size=3)
    assert structure <= set(done)
    assert len(done) < 88 and all(len(c) <= 3 for c in calls)
    assert sorted(s for c in calls for s in c) == done  # no slice segmented twice
    # Outside the run only the samples and the two slices that end it are segmented.
    assert set(done) - structure == set(range(0, 88, step)) - structure | {87, 20, 47}


def test_two_runs_edges_and_misses():
    segment, _ = _searcher({0, 1, 2, 60, 61, 62, 63, 87})
    assert {0, 1, 2, 60, 61, 62, 63, 87} <= set(search_slices(list(range(88)), 4, segment))
    short, _ = _searcher({5, 6})  # shorter than the step and between two samples: missed, as documented
    assert not {5, 6} & set(search_slices(list(range(88)), 4, short))
    empty, calls = _searcher(set())
    assert search_slices(list(range(10, 30)), 5, empty) == [10, 15, 20, 25, 29] and len(calls) == 5
    assert search_slices([], 4, empty) == []


def test_predict_volume_with_search_equals_full_pass_where_it_looked():
    model = build_tiny_model("litemedsam", seed=3).eval()
    image, _ = make_phantom(shape=(12, 40, 48), seed=2)
    full = predict_volume(model, image, PredictConfig(threshold=0.45)).array
    assert full.any()
    seen = []
    searched = predict_volume(
        model, image, PredictConfig(threshold=0.45, slice_search=3), progress=lambda d, t, m: seen.append((d, t))
    ).array
    present = np.flatnonzero(full.reshape(12, -1).any(1))
    assert np.array_equal(searched[present], full[present])  # a tiny random model: foreground on many slices
    assert seen[-1] == (12, 12)
    with pytest.raises(ConfigurationError, match="slice_search"):
        PredictConfig(slice_search=1)
