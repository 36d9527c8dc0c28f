"""Deterministic train/validation split at case (volume) level."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from samtune.errors import ConfigurationError, DataError


def split_cases(
    case_ids: Sequence[str], *, val_fraction: float = 0.2, seed: int = 0, positives: Sequence[str] | None = None
) -> tuple[list[str], list[str]]:
    """Split case identifiers into training and validation cases.

    Slices of one case never straddle the split. The result depends only on the set of ids and the
    seed, not on their order.

    Args:
        case_ids: Unique case identifiers.
        val_fraction: Fraction of cases for validation, in [0, 1); at least one case when > 0.
        seed: Seed of the shuffle.
        positives: The cases that show the structure. When given and at least two do, the validation
            and the training cases each include one of them: a validation set of negatives alone
            (lesion-free pictures) scores every checkpoint alike, so the first epoch's would be kept.

    Raises:
        ConfigurationError: Bad fraction or duplicate ids.
        DataError: Validation requested with fewer than two cases.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigurationError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    ids = sorted(str(c) for c in case_ids)
    if len(set(ids)) != len(ids):
        duplicates = sorted({c for c in ids if ids.count(c) > 1})
        raise ConfigurationError(f"Case ids must be unique; repeated: {duplicates}.")
    if val_fraction == 0.0:
        return ids, []
    if len(ids) < 2:
        raise DataError(
            f"A validation split needs at least two labelled cases, got {len(ids)}. Add a case, or set the "
            "validation fraction to 0 (then no validation Dice is reported)."
        )
    order = [int(i) for i in np.random.default_rng(seed).permutation(len(ids))]
    n_val = min(len(ids) - 1, max(1, int(round(val_fraction * len(ids)))))
    shows = set(positives or ())
    if len(shows & set(ids)) >= 2 and not any(ids[i] in shows for i in order[:n_val]):
        first = next(n for n in range(n_val, len(order)) if ids[order[n]] in shows)
        order[n_val - 1], order[first] = order[first], order[n_val - 1]  # the last validation case gives way
    elif len(shows & set(ids)) >= 2 and not any(ids[i] in shows for i in order[n_val:]):
        last = max(n for n in range(n_val) if ids[order[n]] in shows)
        order[last], order[n_val] = order[n_val], order[last]  # training keeps one that shows it
    val = sorted(ids[i] for i in order[:n_val])
    train = sorted(ids[i] for i in order[n_val:])
    return train, val
