"""Label maps -> per-structure binary masks, validation, and which slices count as ground truth."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from samtune.data.slicing import extract_slices
from samtune.enums import StrEnum
from samtune.errors import ConfigurationError, LabelError


class EmptySlicePolicy(StrEnum):
    """What to do with ground-truth slices that contain no foreground."""

    DROP = "drop"  # train on foreground slices only
    KEEP_FRACTION = "keep_fraction"  # keep a seeded fraction of the empty slices (true negatives)
    KEEP_ALL = "keep_all"
    BALANCED = "balanced"  # as many empty slices as foreground ones (all of them when fewer), seeded


def validate_structures(label: np.ndarray, structures: dict[str, int], *, source: str = "label map") -> None:
    """Check that a label map can train the requested structures.

    Raises:
        LabelError: No foreground at all, every voxel foreground, or a requested value absent.
    """
    label = np.asarray(label)
    foreground = label != 0
    if not foreground.any():
        raise LabelError(f"The {source} is empty (no labelled voxel). Paint the structure on at least one slice.")
    if foreground.all():
        raise LabelError(
            f"Every voxel of the {source} is foreground; a label map needs background (0) too. "
            "Did you pass the image instead of the label?"
        )
    present = sorted(int(v) for v in np.unique(label) if v != 0)
    for name, value in structures.items():
        if int(value) not in present:
            raise LabelError(
                f"Structure '{name}' (label value {value}) does not occur in the {source}; values present: {present}."
            )


def structure_masks(label: np.ndarray, structures: dict[str, int]) -> dict[str, np.ndarray]:
    """One boolean mask per structure name from a multi-label map."""
    label = np.asarray(label)
    return {name: label == int(value) for name, value in structures.items()}


def labelled_slices_from_label(label: np.ndarray, axis: int) -> np.ndarray:
    """``(N,)`` booleans: which slices along ``axis`` carry any nonzero label (painted slices)."""
    slices = extract_slices(np.asarray(label) != 0, axis)
    return np.asarray(slices.reshape(slices.shape[0], -1).any(axis=1), dtype=bool)


def select_slices(
    masks: np.ndarray,
    *,
    labelled: np.ndarray | Sequence[bool] | None = None,
    policy: EmptySlicePolicy | str = EmptySlicePolicy.KEEP_FRACTION,
    keep_fraction: float = 0.1,
    seed: int = 0,
) -> np.ndarray:
    """Indices of the slices to train on.

    Args:
        masks: ``(N, H, W)`` boolean masks of one structure.
        labelled: ``(N,)`` which slices are ground truth. ``None`` = fully labelled (every slice is
            ground truth, empty ones are true negatives). For a sparsely labelled case pass the
            painted slices plus those the user marked empty: unpainted slices are never treated as
            background.
        policy: What to do with ground-truth slices without foreground.
        keep_fraction: Fraction of those kept with ``keep_fraction`` (at least one if any exist).
            ``balanced`` keeps as many as there are slices with foreground (at least one).
        seed: Seed of the choice of kept empty slices.

    Returns:
        Sorted slice indices.
    """
    masks = np.asarray(masks, dtype=bool)
    n = masks.shape[0]
    truth = np.ones(n, dtype=bool) if labelled is None else np.asarray(labelled, dtype=bool)
    if truth.shape != (n,):
        raise ConfigurationError(f"'labelled' must have one flag per slice ({n}), got shape {truth.shape}.")
    if not 0.0 <= keep_fraction <= 1.0:
        raise ConfigurationError(f"keep_fraction must be in [0, 1], got {keep_fraction}.")
    has_fg = masks.reshape(n, -1).any(axis=1)
    positive = np.flatnonzero(truth & has_fg)
    empty = np.flatnonzero(truth & ~has_fg)
    policy = EmptySlicePolicy.parse(policy, what="empty-slice policy")
    if policy is EmptySlicePolicy.DROP or len(empty) == 0:
        kept = np.zeros(0, dtype=np.int64)
    elif policy is EmptySlicePolicy.KEEP_ALL or (policy is EmptySlicePolicy.BALANCED and len(empty) <= len(positive)):
        kept = empty
    elif policy is EmptySlicePolicy.BALANCED:
        kept = np.random.default_rng(seed).choice(empty, size=max(1, len(positive)), replace=False)
    else:
        count = max(1, int(round(keep_fraction * len(empty)))) if keep_fraction > 0 else 0
        kept = np.random.default_rng(seed).choice(empty, size=count, replace=False)
    return np.sort(np.concatenate([positive, kept]).astype(np.int64))
