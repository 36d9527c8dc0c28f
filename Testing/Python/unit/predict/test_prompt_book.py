"""Prompts kept per slice: a box on one slice never pins the clicks on another, views keep their own."""

from __future__ import annotations

import pytest

from samtune.data.slicing import slice_index
from samtune.errors import ConfigurationError
from samtune.predict.prompt_book import PromptBook


def test_points_and_boxes_stay_with_their_slice_and_axis():
    book = PromptBook()
    assert book.set_box((2.0, 3.0, 4.4), (9.0, 8.0, 3.8), axis=0) == (0, 4)  # a drag ending on slice 4
    assert book.add_point((5.0, 5.0, 6.9), 1, axis=0) == (0, 7)
    assert book.add_point((5.0, 6.0, 7.2), 0, axis=0) == (0, 7)
    assert book.add_point((3.0, 5.0, 7.0), 1, axis=2) == (2, 3)  # the same voxel area, clicked in a sagittal view
    on_four = book.prompts(0, 4)
    assert on_four.points == [] and on_four.box == (2.0, 3.0, 4.0, 9.0, 8.0, 4.0)  # both corners on slice 4
    on_seven = book.prompts(0, 7)
    assert on_seven.box is None and on_seven.labels == [1, 0] and len(on_seven.points) == 2
    assert book.prompts(2, 3).points == [(3.0, 5.0, 7.0)]
    assert book.prompts(1, 5).is_empty
    assert sorted(book.slices) == [(0, 4), (0, 7), (2, 3)]
    book.set_box((0.0, 0.0, 4.0), (1.0, 1.0, 4.0), axis=0)
    assert book.prompts(0, 4).box == (0.0, 0.0, 4.0, 1.0, 1.0, 4.0)  # a new box on a slice replaces its box
    book.clear(0, 7)
    assert sorted(book.slices) == [(0, 4), (2, 3)]
    book.clear()
    assert book.slices == []


def test_bad_prompts_are_refused():
    with pytest.raises(ConfigurationError, match="label"):
        PromptBook().add_point((1, 1, 1), 2, axis=0)
    with pytest.raises(ConfigurationError, match="axis"):
        slice_index((1, 1, 1), 3)
    assert slice_index((1.0, 2.6, 3.0), 1) == 3
