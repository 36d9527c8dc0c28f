"""The presence decision's threshold, chosen on validation slices (or the neutral default without them).

A model trained with ``presence_weight`` scores, per slice, the probability that the structure is
there; automatic prediction drops the masks of slices scored below a threshold. The threshold is the
one (from a fixed grid) that maximises the mean per-case Dice of the validation slices after the
drop; ties go to the threshold nearest 0.5, the natural cut of a cross-entropy-trained probability.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from samtune.train.cache import EmbeddingCache
from samtune.train.data import SliceSamples

#: Threshold of a model with a presence head but no validation data.
DEFAULT_PRESENCE_THRESHOLD = 0.5
#: Candidate thresholds.
THRESHOLDS = tuple(round(float(t), 2) for t in np.arange(0.05, 0.951, 0.05))


def choose_presence_threshold(
    probability: Sequence[float],
    intersection: Sequence[float],
    predicted: Sequence[float],
    reference: Sequence[float],
    case_ids: Sequence[str],
) -> tuple[float, float]:
    """``(threshold, mean per-case Dice at it)`` from per-slice figures of the validation slices.

    Args:
        probability: Presence probability of each slice.
        intersection: Foreground pixels shared by the slice's mask and its reference.
        predicted: Foreground pixels of the slice's mask.
        reference: Foreground pixels of the reference.
        case_ids: The case of each slice (Dice is per case, then averaged).
    """
    p, inter, pred, ref = (np.asarray(v, dtype=np.float64) for v in (probability, intersection, predicted, reference))
    cases = np.asarray(case_ids)
    best: tuple[float, float, float] = (-1.0, 0.0, DEFAULT_PRESENCE_THRESHOLD)  # (dice, -distance to 0.5, t)
    for t in THRESHOLDS:
        kept = p >= t
        dices = []
        for case in np.unique(cases):
            rows = cases == case
            denominator = (pred[rows] * kept[rows]).sum() + ref[rows].sum()
            dices.append(1.0 if denominator == 0 else 2 * (inter[rows] * kept[rows]).sum() / denominator)
        candidate = (float(np.mean(dices)), -abs(t - 0.5), t)
        if candidate[:2] > best[:2]:
            best = candidate
    return best[2], best[0]


@torch.no_grad()
def presence_figures(
    outputs_of: Callable[[torch.Tensor | None, torch.Tensor | None, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    samples: SliceSamples,
    cache: EmbeddingCache | None,
    *,
    device: torch.device,
    batch_size: int,
) -> dict[str, list[Any]]:
    """Per-slice inputs of :func:`choose_presence_threshold` for ``samples``, in the model's input frame.

    ``outputs_of(images, embeddings, masks)`` returns ``(logits (B, 1, S, S), presence logits (B,))``.
    """
    figures: dict[str, list[Any]] = {"probability": [], "intersection": [], "predicted": [], "reference": []}
    for start in range(0, len(samples), batch_size):
        index = torch.arange(start, min(start + batch_size, len(samples)))
        masks = samples.masks.index_select(0, index).to(device)
        if cache is not None:
            logits, score = outputs_of(None, cache.get(index, device), masks)
        else:
            logits, score = outputs_of(samples.images.index_select(0, index).to(device), None, masks)
        predicted = logits[:, 0].float() > 0
        figures["probability"] += torch.sigmoid(score.float()).tolist()
        figures["intersection"] += (predicted & masks).flatten(1).sum(1).tolist()
        figures["predicted"] += predicted.flatten(1).sum(1).tolist()
        figures["reference"] += masks.flatten(1).sum(1).tolist()
    figures["case_ids"] = list(samples.case_ids)
    return figures


__all__ = ["DEFAULT_PRESENCE_THRESHOLD", "THRESHOLDS", "choose_presence_threshold", "presence_figures"]
