"""The interactive predictor session (tiny model): cache hits skip the encoder, the LRU bound holds,
IJK prompts equal the whole-volume path, prefetching fills the cache, bad prompts are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samtune.data import make_phantom
from samtune.errors import ConfigurationError
from samtune.models import build_tiny_model
from samtune.predict import PredictConfig, SlicePrompt, merge_prompts, point_prompts_from_ijk, predict_volume
from samtune.predict.session import PredictorSession
from samtune.predict.user_prompts import box_prompts_from_ijk


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_tiny_model("litemedsam", seed=0).eval()


@pytest.fixture(scope="module")
def volume():
    image, _ = make_phantom(shape=(6, 40, 48), spacing=(0.8, 1.1, 2.5), seed=1)
    return image


def _count_encoder(model) -> list[int]:
    calls = [0]
    model.image_encoder.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_cached_slices_skip_the_encoder(model, volume):
    session = PredictorSession(model, volume)
    calls = _count_encoder(model)
    before = calls[0]
    session.predict_ijk([(20, 18, 3)], [1])
    session.predict_ijk([(20, 18, 3), (5, 5, 3)], [1, 0])
    session.predict_ijk(box=(10, 10, 3, 30, 28, 3))
    assert calls[0] - before == 1 and session.encoder_calls == 1
    session.predict_slice(4)
    assert calls[0] - before == 2


def test_lru_eviction_bounds_the_cache(model, volume):
    one = PredictorSession(model, volume)
    one.embedding(0)
    size = one.cached_bytes
    session = PredictorSession(model, volume, cache_bytes=int(2.5 * size))
    for s in range(5):
        session.embedding(s)
    assert session.cached_slices == [3, 4] and session.cached_bytes <= 2.5 * size
    session.embedding(3)  # a hit refreshes slice 3, so slice 4 is the oldest now
    session.embedding(0)
    assert session.cached_slices == [3, 0] and session.encoder_calls == 6


@pytest.mark.parametrize("axis", ["k", "j"])
def test_ijk_prompts_match_whole_volume_prediction(model, volume, axis):
    session = PredictorSession(model, volume, axis=axis)
    points, labels = [(22, 20, 3), (4, 6, 3)], [1, 0]
    box = (12, 10, 3, 30, 26, 3) if axis == "k" else (12, 20, 1, 30, 20, 4)
    if axis == "j":
        points = [(22, 20, 2), (4, 20, 4)]
    index, mask = session.predict_ijk(points, labels, box=box)
    axis_index = session.axis
    prompts = merge_prompts(
        point_prompts_from_ijk(points, labels, axis=axis_index), box_prompts_from_ijk([box], axis=axis_index,
                                                                                     shape=volume.shape)
    )  # fmt: skip
    expected = predict_volume(
        model, volume, PredictConfig(slices=session.slice_config), prompts={index: prompts[index]}
    )
    np.testing.assert_array_equal(mask, np.moveaxis(expected.array, axis_index, 0)[index] > 0)
    assert mask.shape == np.moveaxis(volume.array, axis_index, 0)[index].shape


def test_automatic_mode_matches_whole_volume_prediction(model, volume):
    session = PredictorSession(model, volume)
    expected = predict_volume(model, volume, PredictConfig(slice_range=(2, 3)))
    np.testing.assert_array_equal(session.predict_slice(2), expected.array[2] > 0)
    assert not session.predict_slice(2, SlicePrompt()).any()  # an empty prompt is an empty mask


def test_prefetch_encodes_ahead_in_the_background(model, volume):
    session = PredictorSession(model, volume)
    session.prefetch([1, 2, 99]).result(timeout=60)  # out-of-range slices are skipped
    assert session.cached_slices == [1, 2] and session.encoder_calls == 2
    session.predict_slice(2, SlicePrompt(points=[[10, 10]], point_labels=[1]))
    assert session.encoder_calls == 2
    session.close()
    assert session.cached_slices == []


def test_bad_prompts_are_refused_with_the_reason(model, volume):
    session = PredictorSession(model, volume)
    with pytest.raises(ConfigurationError, match=r"span slices \[1, 3\]"):
        session.predict_ijk([(1, 1, 1), (2, 2, 3)], [1, 1])
    with pytest.raises(ConfigurationError, match="outside the volume"):
        session.predict_slice(6)
    with pytest.raises(ConfigurationError, match="direction"):
        session.propagate(2, np.ones((40, 48), bool), direction=0)
    with pytest.raises(ConfigurationError, match="threshold"):
        PredictorSession(model, volume, threshold=1.0)


def test_session_pool_keeps_model_and_embeddings_until_the_model_or_the_volume_changes(model, volume):
    from samtune.predict.session import SessionPool

    loads = {"model": 0, "volume": 0}

    def load_model():
        loads["model"] += 1
        return model

    def load_volume():
        loads["volume"] += 1
        return volume

    pool = SessionPool(runtime="torch")
    axial = pool.get("m", load_model, ("vol", 1), load_volume, axis=0, threshold=0.5)
    axial.predict_slice(2)
    again = pool.get("m", load_model, ("vol", 1), load_volume, axis=0, threshold=0.8)  # a threshold change
    assert again is axial and again.threshold == 0.8 and again.cached_slices == [2]
    again.predict_slice(2)
    assert axial.encoder_calls == 1  # the cached embedding served the new threshold
    sagittal = pool.get("m", load_model, ("vol", 1), load_volume, axis=2)  # a click in another view
    assert sagittal is not axial and sagittal.axis == 2 and axial.cached_slices == [2]
    assert loads == {"model": 1, "volume": 1}
    changed = pool.get("m", load_model, ("vol", 2), load_volume, axis=0)  # the volume's voxels changed
    assert changed is not axial and changed.cached_slices == [] and loads == {"model": 1, "volume": 2}
    pool.get("other", load_model, ("vol", 2), load_volume, axis=0)
    assert loads == {"model": 2, "volume": 3} and pool.model_key == "other"
    with pytest.raises(ConfigurationError, match="threshold"):
        pool.get("other", load_model, ("vol", 2), load_volume, axis=0, threshold=1.0)
    pool.close()
    assert pool.model_key is None


def test_the_pool_sets_the_refinement_passes_and_the_session_predicts_as_the_whole_volume_path(model, volume):
    from samtune.predict.session import SessionPool

    pool = SessionPool(runtime="torch")
    masks = {}
    for refine in (0, 1):
        session = pool.get("m", lambda: model, ("vol", 1), lambda: volume, axis=0, threshold=0.5, refine=refine)
        assert session.refine == refine
        masks[refine] = session.predict_slice(2)
        expected = predict_volume(model, volume, PredictConfig(slice_range=(2, 3), refine=refine))
        np.testing.assert_array_equal(masks[refine], expected.array[2] > 0)
    assert (masks[0] != masks[1]).any()  # the refinement pass redrew the mask
    assert pool.get("m", lambda: model, ("vol", 1), lambda: volume, axis=0).refine is None  # the model's own again
    with pytest.raises(ConfigurationError, match="refine"):
        pool.get("m", lambda: model, ("vol", 1), lambda: volume, axis=0, refine=4)
    pool.close()
