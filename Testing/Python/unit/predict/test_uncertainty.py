"""Which slice to correct next: the uncertainty of a slice the model is sure of is low, of one it
hesitates on is high, from what decoding computed anyway; and prediction fills it without changing
its result."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samtune.data import make_phantom
from samtune.models import build_model
from samtune.predict import PredictConfig, predict_volume
from samtune.predict.uncertainty import rank_slices, slice_uncertainty


def _disc(radius: float, size: int = 32) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= radius**2).float()


def _passes() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Four slices: sure present, sure absent, hesitant (presence at the threshold, the passes
    disagree, soft edges), and sure present but the refined pass moved the mask."""
    crisp = _disc(8) * 20 - 10  # logits +-10
    absent = torch.full((32, 32), -10.0)
    soft = _disc(10) * 1.0 - 0.5  # probabilities 0.62 / 0.38
    moved = torch.roll(crisp, shifts=6, dims=1)
    first = torch.stack([crisp, absent, crisp, crisp])[:, None]
    refined = torch.stack([crisp, absent, soft, moved])[:, None]
    presence = torch.tensor([8.0, -8.0, 0.0, 8.0])  # logits; 0.0 is probability 0.5
    return first, refined, presence


def test_sure_slices_score_low_and_hesitant_ones_high() -> None:
    first, refined, presence = _passes()
    scores = slice_uncertainty(first, refined, presence, presence_threshold=0.5, refine=1)
    assert scores.shape == (4,) and ((scores >= 0) & (scores <= 1)).all()
    assert scores[0] < 0.01 and scores[1] < 0.01  # clearly present with a crisp agreed mask; clearly absent
    assert scores[2] > 0.6  # every signal high
    assert 0.1 < scores[3] < scores[2]  # only the passes' disagreement
    assert [s for s, _ in rank_slices(dict(enumerate(scores.tolist())))] == [2, 3, 0, 1]


def test_signals_a_model_lacks_are_left_out() -> None:
    first, refined, presence = _passes()
    # No presence head and no refinement: only entropy remains; the crisp slices stay sure.
    scores = slice_uncertainty(first, refined, presence, presence_threshold=None, refine=0)
    entropy_only = slice_uncertainty(first, refined, torch.zeros(4), presence_threshold=None, refine=0)
    np.testing.assert_allclose(scores, entropy_only)  # presence logits are not read
    assert scores[0] < 0.01 and scores[3] < 0.01 and scores[2] > 0.9  # soft edges are all entropy


def test_ranking_is_most_uncertain_first_ties_by_slice() -> None:
    assert rank_slices({4: 0.2, 1: 0.9, 7: 0.2, 2: 0.5}) == [(1, 0.9), (2, 0.5), (4, 0.2), (7, 0.2)]
    assert rank_slices({4: 0.2, 1: 0.9, 7: 0.2}, 2) == [(1, 0.9), (4, 0.2)]


@pytest.mark.parametrize("refine", [0, 1])
def test_prediction_fills_uncertainty_without_changing_its_result(refine: int) -> None:
    torch.manual_seed(0)
    model = build_model("sam_vit_b", tiny=True)
    image, _ = make_phantom(shape=(5, 40, 40), seed=2)
    config = PredictConfig(batch_size=2, refine=refine)
    scores: dict[int, float] = {}
    with_scores = predict_volume(model, image, config, uncertainty=scores)
    without = predict_volume(model, image, config)
    np.testing.assert_array_equal(with_scores.array, without.array)
    assert sorted(scores) == [0, 1, 2, 3, 4] and all(0.0 <= u <= 1.0 for u in scores.values())
