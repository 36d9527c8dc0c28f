"""Validation: foreground Dice and NSD of a model on slice samples, per case on the original slice
grids, then the mean over cases (what the best checkpoint and the reported figures are chosen by)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import numpy as np
import torch

from samtune.metrics import dice, normalized_surface_dice
from samtune.train.cache import EmbeddingCache
from samtune.train.data import SliceSamples

#: ``logits(images, embeddings, masks) -> (B, 1, S, S)`` in the model's input frame.
LogitsFunction = Callable[[Optional[torch.Tensor], Optional[torch.Tensor], torch.Tensor], torch.Tensor]


@torch.no_grad()
def evaluate_samples(
    logits_of: LogitsFunction,
    samples: SliceSamples,
    cache: EmbeddingCache | None,
    *,
    device: torch.device,
    batch_size: int,
    nsd_tolerance_mm: float,
    indices: list[int] | None = None,
) -> tuple[float, float]:
    """Mean over cases of the foreground Dice and NSD of ``samples`` (or of rows ``indices``).

    Each case's predicted slices are mapped back onto their own grids before they are scored, so
    the figures are those a user sees, not those of the model's resized input.
    """
    rows_all = list(range(len(samples))) if indices is None else list(indices)
    predictions: dict[int, np.ndarray] = {}
    for start in range(0, len(rows_all), batch_size):
        index = torch.tensor(rows_all[start : start + batch_size], dtype=torch.long)
        masks = samples.masks.index_select(0, index).to(device)
        if cache is not None:
            embeddings, images = cache.get(index, device), None
        else:
            embeddings, images = None, samples.images.index_select(0, index).to(device)
        logits = logits_of(images, embeddings, masks)
        for row, i in enumerate(index.tolist()):
            grid = samples.grids[samples.case_ids[i]]
            predictions[i] = grid.logits_to_masks(logits[row : row + 1].float())[0]  # type: ignore[attr-defined]
    by_case: dict[str, list[int]] = {}
    for i in rows_all:
        by_case.setdefault(samples.case_ids[i], []).append(i)
    dices, nsds = [], []
    for rows in by_case.values():
        prediction = np.stack([predictions[i] for i in rows])
        reference = np.stack([samples.slice_masks[i] for i in rows])
        dices.append(dice(prediction, reference))
        row_mm, col_mm = samples.spacing[rows[0]]
        nsds.append(
            float(np.mean([
                normalized_surface_dice(p, r, spacing=(row_mm, col_mm), tolerance_mm=nsd_tolerance_mm)
                for p, r in zip(prediction, reference)
            ]))
        )  # fmt: skip
    return float(np.mean(dices)), float(np.mean(nsds))


__all__ = ["evaluate_samples"]
