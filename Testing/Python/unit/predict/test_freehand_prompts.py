"""Scribbles, lassos and mask prompts: their geometry, their place in the prompt book, and what the
decoder receives (tiny model): a scribble equals its sampled points, a lasso equals its box plus its
interior as SAM's mask input, a mask prompt changes the answer, and bad drawings are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samtune.data import make_phantom
from samtune.errors import ConfigurationError
from samtune.models import build_tiny_model
from samtune.predict import PredictConfig, SlicePrompt, predict_volume
from samtune.predict.decode import decode_prompted
from samtune.predict.prompt_book import PromptBook
from samtune.predict.session import PredictorSession
from samtune.predict.strokes import lasso_mask, mask_bounding_box, scribble_points


@pytest.fixture(scope="module")
def model():
    return build_tiny_model("litemedsam", seed=0).eval()


@pytest.fixture(scope="module")
def volume():
    image, _ = make_phantom(shape=(6, 40, 48), spacing=(0.8, 1.1, 2.5), seed=1)
    return image


def test_scribble_points_are_spread_evenly_along_the_path_ends_included():
    stroke = [[0, 0], [10, 0], [10, 10], [10, 20]]  # an L of length 30
    points = scribble_points(stroke, spacing=10)
    np.testing.assert_allclose(points, [[0, 0], [10, 0], [10, 10], [10, 20]], atol=1e-6)
    long = scribble_points([[0, 0], [1000, 0]], spacing=10, max_points=5)
    np.testing.assert_allclose(long[:, 0], [0, 250, 500, 750, 1000])
    assert scribble_points([[4, 5], [4.5, 5]], spacing=8).tolist() == [[4, 5]]  # a short stroke is one point


def test_lasso_mask_fills_the_outline_with_the_even_odd_rule():
    square = lasso_mask([[2, 3], [6, 3], [6, 8], [2, 8]], (12, 10))
    expected = np.zeros((12, 10), dtype=bool)
    expected[4:8, 3:6] = True  # pixel centres strictly inside (edges are half-open)
    expected[3, 2:6] = True
    assert square[3:9, 2:7].sum() == square.sum()
    assert square[5, 4] and not square[0, 0] and not square[5, 8]
    triangle = lasso_mask([[0, 0], [9, 0], [0, 9]], (10, 10))
    assert triangle[1, 1] and not triangle[8, 8]
    assert 40 <= triangle.sum() <= 55  # about half of 100
    clipped = lasso_mask([[-5, -5], [4, -5], [4, 4], [-5, 4]], (10, 10))  # partly off the slice
    assert clipped[:4, :4].all() and clipped.sum() == 16
    np.testing.assert_array_equal(mask_bounding_box(clipped), [0, 0, 3, 3])


@pytest.mark.parametrize(
    ("outline", "message"),
    [
        ([[1, 1], [5, 5]], "at least 3"),
        ([[1, 1], [1, 1.2], [1.1, 1.1]], "encloses no pixel"),
        ([[0, 0], [np.nan, 1], [2, 2]], "finite"),
    ],
)
def test_bad_lassos_are_refused_with_what_to_do(outline, message):
    with pytest.raises(ConfigurationError, match=message):
        lasso_mask(outline, (10, 10))


def test_prompt_book_keeps_scribbles_and_lassos_on_the_slice_where_the_drag_started():
    book = PromptBook()
    key = book.add_scribble([(1, 2, 3.2), (5, 6, 3.6), (9, 9, 4.4)], 0, axis=0)
    assert key == (0, 3)
    ((path, label),) = book.prompts(0, 3).scribbles
    assert label == 0 and {p[2] for p in path} == {3.0}  # flattened onto slice 3
    book.set_lasso([(1, 1, 3), (8, 1, 3), (8, 8, 3)], axis=0)
    book.set_lasso([(2, 2, 3), (7, 2, 3), (7, 7, 3)], axis=0)  # a new lasso replaces the old
    assert book.prompts(0, 3).lasso[0] == (2.0, 2.0, 3.0)
    assert book.slices == [(0, 3)] and book.prompts(1, 3).is_empty
    with pytest.raises(ConfigurationError, match="label"):
        book.add_scribble([(1, 1, 1)], 2, axis=0)
    with pytest.raises(ConfigurationError, match="at least 3"):
        book.set_lasso([(1, 1, 1), (2, 2, 1)], axis=0)


def test_a_scribble_is_its_sampled_points(model, volume):
    session = PredictorSession(model, volume)
    path = [(8.0, 10.0, 2.0), (20.0, 10.0, 2.0), (20.0, 26.0, 2.0)]
    index, prompt = session.prompt_from_ijk(scribbles=[(path, 1)])
    assert index == 2
    expected = scribble_points([[8, 10], [20, 10], [20, 26]])
    np.testing.assert_allclose(prompt.points, expected)
    assert prompt.point_labels.tolist() == [1] * len(expected)
    _, mask = session.predict_ijk(scribbles=[(path, 1)])
    by_points = predict_volume(model, volume, PredictConfig(slices=session.slice_config),
                               prompts={2: SlicePrompt(points=expected, point_labels=[1] * len(expected))})  # fmt: skip
    np.testing.assert_array_equal(mask, by_points.array[2] > 0)


def test_a_lasso_is_its_box_and_its_interior_as_sams_mask_input(model, volume):
    session = PredictorSession(model, volume)
    outline = [(6.0, 8.0, 4.0), (30.0, 8.0, 4.0), (30.0, 30.0, 4.0), (6.0, 30.0, 4.0)]
    index, prompt = session.prompt_from_ijk(lasso=outline)
    interior = lasso_mask([[6, 8], [30, 8], [30, 30], [6, 30]], (40, 48))
    assert index == 4
    np.testing.assert_array_equal(prompt.mask, interior)
    np.testing.assert_array_equal(prompt.boxes, [mask_bounding_box(interior)])
    # What the decoder gets: the mask resized into the model frame, as logits of 0.999 / 0.001.
    model_mask = session.grid().mask_to_model(interior)
    assert model_mask.shape == (model.input_size, model.input_size)
    logits = model.mask_input(model_mask[None])
    assert logits.shape == (1, 1, *model.mask_input_size)
    assert float(logits.max()) == pytest.approx(np.log(999), rel=1e-3) and float(logits.min()) < -6.9
    # The mask changes the answer: the same box without it decodes differently.
    embedding = session.embedding(index)
    box = torch.as_tensor(session.grid().resize.apply_coords(prompt.boxes.reshape(2, 2)).reshape(1, 4))
    with torch.inference_mode():
        decoded = decode_prompted(model, embedding, [prompt], session.grid().resize.apply_coords,
                                  session.grid().mask_to_model)  # fmt: skip
        by_hand, _ = model.decode(embedding, boxes=box, mask_prompt=logits)
        box_only, _ = model.decode(embedding, boxes=box)
    torch.testing.assert_close(decoded, by_hand.float())
    assert float((by_hand - box_only).abs().max()) > 1e-3


def test_the_current_segment_refines_through_the_mask_input(model, volume):
    session = PredictorSession(model, volume)
    segment = np.zeros((40, 48), dtype=bool)
    segment[10:25, 12:30] = True
    _, plain = session.predict_ijk([(20, 18, 3)], [1])
    index, prompt = session.prompt_from_ijk([(20, 18, 3)], [1], mask=segment)
    np.testing.assert_array_equal(prompt.mask, segment)
    _, refined = session.predict_ijk([(20, 18, 3)], [1], mask=segment)
    assert refined.shape == plain.shape == segment.shape
    grid, embedding = session.grid(), session.embedding(3)
    with torch.inference_mode():
        with_segment = decode_prompted(model, embedding, [prompt], grid.resize.apply_coords, grid.mask_to_model)
        without = decode_prompted(model, embedding, [SlicePrompt(points=prompt.points, point_labels=[1])],
                                  grid.resize.apply_coords)  # fmt: skip
    assert float((with_segment - without).abs().max()) > 1e-3  # the segment reached the decoder
    with pytest.raises(ConfigurationError, match="does not fit"):
        session.prompt_from_ijk([(20, 18, 3)], [1], mask=np.zeros((4, 4), dtype=bool))
    with pytest.raises(ConfigurationError, match="which slice"):
        session.prompt_from_ijk(mask=segment)
    with pytest.raises(ConfigurationError, match="one slice"):
        session.prompt_from_ijk([(20, 18, 3)], [1], scribbles=[([(1, 1, 4), (5, 5, 4)], 1)])


def test_predict_entry_segments_everything_a_slice_holds(model, volume):
    session = PredictorSession(model, volume)
    book = PromptBook()
    book.add_point((20, 18, 3), 1, axis=session.axis)
    book.add_scribble([(4, 4, 3), (10, 4, 3)], 0, axis=session.axis)
    book.set_lasso([(12, 10, 3), (34, 10, 3), (34, 30, 3), (12, 30, 3)], axis=session.axis)
    entry = book.prompts(session.axis, 3)
    index, mask = session.predict_entry(entry)
    _, prompt = session.prompt_from_ijk(entry.points, entry.labels, scribbles=entry.scribbles, lasso=entry.lasso)
    assert index == 3 and len(prompt.points) == 1 + 1 and prompt.point_labels.tolist() == [1, 0]
    np.testing.assert_array_equal(mask, session.predict_slice(3, prompt))
