"""Decoding prompts into masks: the step after the image encoder, shared by whole-volume prediction
(:mod:`samtune.predict.volume`) and the interactive session (:mod:`samtune.predict.session`).

Prompts arrive in the slice pixel frame (:class:`~samtune.predict.user_prompts.SlicePrompt`);
``to_model`` maps pixel coordinates into the model's input frame.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from samtune.models.sam_model import SamModel
from samtune.predict.user_prompts import SlicePrompt


def decode_prompted(
    model: SamModel,
    embeddings: torch.Tensor,
    prompts: Sequence[SlicePrompt],
    to_model: Callable[[np.ndarray], np.ndarray],
) -> torch.Tensor:
    """Decode each slice's objects and unite them.

    Every box is one object (carrying all the slice's points); a slice with points only is one
    object. Objects with and without a box go through the decoder in two calls, since SAM's prompt
    encoder takes either a box for every item of a batch or none.

    Returns:
        ``(B, 1, Hl, Wl)`` low-resolution logits, the maximum over each slice's objects.
    """
    objects: list[tuple[int, np.ndarray | None, np.ndarray, np.ndarray]] = []
    for b, prompt in enumerate(prompts):
        points = to_model(prompt.points) if len(prompt.points) else prompt.points
        boxes: list[np.ndarray | None] = [to_model(box.reshape(2, 2)).reshape(4) for box in prompt.boxes]
        boxes = boxes or [None]
        objects.extend((b, box, points, prompt.point_labels) for box in boxes)
    device = embeddings.device
    result: torch.Tensor | None = None
    for group in ([o for o in objects if o[1] is not None], [o for o in objects if o[1] is None]):
        if not group:
            continue
        owners = torch.as_tensor([o[0] for o in group], device=device)
        boxes_t = None
        if group[0][1] is not None:
            stacked = np.stack([o[1] for o in group if o[1] is not None])
            boxes_t = torch.as_tensor(stacked, dtype=torch.float32, device=device)
        points_t = pad_points([(o[2], o[3]) for o in group], device)
        logits, _ = model.decode(embeddings.index_select(0, owners), boxes=boxes_t, points=points_t)
        if result is None:
            result = torch.full((len(prompts), *logits.shape[1:]), -torch.inf, device=device)
        for row, owner in enumerate(owners.tolist()):  # a handful of objects: a loop is clearest
            result[owner] = torch.maximum(result[owner], logits[row].float())
    assert result is not None  # every prompt is non-empty, so at least one group ran
    return result


def pad_points(
    point_sets: Sequence[tuple[np.ndarray, np.ndarray]], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Stack ragged point sets into ``(M, P, 2)`` coords and ``(M, P)`` labels (-1 = padding)."""
    most = max((len(p) for p, _ in point_sets), default=0)
    if most == 0:
        return None
    coords = np.zeros((len(point_sets), most, 2), dtype=np.float32)
    labels = -np.ones((len(point_sets), most), dtype=np.int64)
    for m, (p, lab) in enumerate(point_sets):
        coords[m, : len(p)] = p
        labels[m, : len(p)] = lab
    return torch.as_tensor(coords, device=device), torch.as_tensor(labels, device=device)


__all__ = ["decode_prompted", "pad_points"]
