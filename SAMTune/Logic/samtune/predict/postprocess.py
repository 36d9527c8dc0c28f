"""Post-processing of predicted masks."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk


def keep_largest_component(mask: np.ndarray) -> np.ndarray:
    """Only the largest connected component of a binary 2D or 3D mask (face connectivity).

    Automatic (prompt-free) prediction segments each slice on its own, so a fine-tuned model can add
    small islands on slices far from the structure; for a single connected structure (an organ, the
    left atrium) they are false positives. Ties keep the component found first in scan order.

    Args:
        mask: Boolean or 0/1 array, numpy order.

    Returns:
        A boolean array of the same shape; all False when ``mask`` is empty.
    """
    binary = np.asarray(mask) != 0
    if not binary.any():
        return binary
    components = sitk.ConnectedComponent(sitk.GetImageFromArray(binary.astype(np.uint8)), False)
    ranked = sitk.RelabelComponent(components, sortByObjectSize=True)
    return sitk.GetArrayFromImage(ranked) == 1
