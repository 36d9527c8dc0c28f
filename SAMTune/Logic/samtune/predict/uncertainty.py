"""Which slice to correct next: a per-slice uncertainty of automatic prediction, from what decoding
already computed (no extra encoder or decoder pass).

Three signals, each in ``[0, 1]``, averaged:

* **presence**: how close the presence probability is to the model's threshold (1 at the
  threshold, 0 at certainty); left out for a model without a presence head;
* **disagreement**: ``1 - Dice`` between the prompt-free first pass and the self-prompted refined
  pass (0 when both are empty); left out for a model without refinement;
* **entropy**: the mean binary entropy (bits) of the refined pass's pixel probabilities over the
  pixels it gives more than 5 % (0 when none): a mask with a soft, uncertain edge scores high.

A slice the model is sure of (clearly present with a crisp mask both passes agree on, or clearly
absent) scores near 0.
"""

from __future__ import annotations

import numpy as np
import torch

#: Pixels with a probability above this count for the entropy signal.
CANDIDATE_PROBABILITY = 0.05


def slice_uncertainty(
    first: torch.Tensor,
    refined: torch.Tensor,
    presence: torch.Tensor,
    *,
    presence_threshold: float | None,
    refine: int,
    threshold: float = 0.5,
) -> np.ndarray:
    """``(B,)`` uncertainty per slice from ``(B, 1, H, W)`` first-pass and refined logits and ``(B,)``
    presence logits (see :func:`samtune.predict.decode.automatic_passes`)."""
    cut = float(np.log(threshold / (1 - threshold)))
    p_refined = torch.sigmoid(refined.float()[:, 0])
    signals: list[torch.Tensor] = []
    if presence_threshold:
        t = float(presence_threshold)
        signals.append(1 - (torch.sigmoid(presence.float()) - t).abs() / max(t, 1 - t))
    if refine:
        a, b = first.float()[:, 0] > cut, refined.float()[:, 0] > cut
        overlap = (a & b).flatten(1).sum(1).float()
        sizes = a.flatten(1).sum(1).float() + b.flatten(1).sum(1).float()
        signals.append(torch.where(sizes > 0, 1 - 2 * overlap / sizes.clamp(min=1), torch.zeros_like(sizes)))
    p = p_refined.clamp(1e-6, 1 - 1e-6)
    bits = -(p * torch.log2(p) + (1 - p) * torch.log2(1 - p))
    candidates = (p_refined > CANDIDATE_PROBABILITY).flatten(1)
    count = candidates.sum(1).float()
    entropy = (bits.flatten(1) * candidates).sum(1) / count.clamp(min=1)
    signals.append(torch.where(count > 0, entropy, torch.zeros_like(entropy)))
    return torch.stack(signals).mean(0).clamp(0, 1).cpu().numpy()


def rank_slices(scores: dict[int, float], count: int | None = None) -> list[tuple[int, float]]:
    """``(slice, uncertainty)`` from the most uncertain down (ties: the lower slice first); at most ``count``."""
    ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    return ranked if count is None else ranked[: int(count)]


__all__ = ["CANDIDATE_PROBABILITY", "rank_slices", "slice_uncertainty"]
