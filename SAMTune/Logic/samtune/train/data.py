"""Training cases -> slice samples in model space (images, masks, and which case each came from)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from samtune.data.intensity import normalize_intensity
from samtune.data.labels import EmptySlicePolicy, labelled_slices_from_label, select_slices, validate_structures
from samtune.data.pipeline import prepare_slices, slice_grid
from samtune.data.slicing import SliceConfig, extract_slices, slice_spacing
from samtune.data.transforms import PixelNorm
from samtune.data.volume import Volume
from samtune.errors import DataError

if TYPE_CHECKING:
    from samtune.train.config import AugmentConfig


@dataclass
class TrainingCase:
    """One labelled image for training.

    Attributes:
        case_id: Unique name (file stem, node name).
        image: The image volume (or a 2D image as one slice).
        label: Label map on the same grid (0 = background).
        structure: Name of the structure to learn.
        value: Its label value in ``label``.
        fully_labelled: Every slice is ground truth (empty slices are true negatives). ``False``
            (the default) means only slices that carry a label, plus ``empty_slices``, count.
        empty_slices: Slice indices the user marked as "structure absent" (sparse labelling).
    """

    case_id: str
    image: Volume
    label: Volume
    structure: str = "structure"
    value: int = 1
    fully_labelled: bool = False
    empty_slices: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.image.check_same_grid(self.label, what=f"label of case '{self.case_id}'")


@dataclass
class SliceSamples:
    """Model-space training samples.

    Attributes:
        images: ``(N, 3, S, S)`` normalised model inputs.
        masks: ``(N, S, S)`` boolean targets in model space (padding is background).
        case_ids: Case of each sample.
        slice_index: Slice index within its case.
        slice_masks: Per sample, the target on the original slice grid (for Dice/NSD).
        spacing: Per sample, in-plane pixel size ``(row_mm, col_mm)``.
        grids: Per case, the resize used (to restore predictions exactly).
    """

    images: torch.Tensor
    masks: torch.Tensor
    case_ids: list[str]
    slice_index: list[int]
    slice_masks: list[np.ndarray]
    spacing: list[tuple[float, float]]
    grids: dict[str, object]

    def __len__(self) -> int:
        return int(self.images.shape[0])


def build_samples(
    cases: Sequence[TrainingCase],
    *,
    input_size: int,
    pixel_norm: PixelNorm | str,
    slices: SliceConfig,
    empty_policy: str,
    keep_fraction: float,
    seed: int,
) -> SliceSamples:
    """Cut every case into its ground-truth slices and bring them to model space.

    Raises:
        DataError: No case, or no labelled slice at all (names the cases).
    """
    if not cases:
        raise DataError("No training cases were given. Add at least one image with a label.")
    images: list[torch.Tensor] = []
    masks: list[torch.Tensor] = []
    ids: list[str] = []
    indices: list[int] = []
    originals: list[np.ndarray] = []
    spacings: list[tuple[float, float]] = []
    grids: dict[str, object] = {}
    for n, case in enumerate(cases):
        structure_mask = case.label.array == int(case.value)
        if not structure_mask.any() and not case.fully_labelled and not case.empty_slices:
            # a fully labelled case without the structure, or slices marked empty (corrections of false
            # positives), are negatives; anything else with no voxel of it is a mistake
            validate_structures(
                case.label.array, {case.structure: case.value}, source=f"label of case '{case.case_id}'"
            )
        grid = slice_grid(case.image, input_size=input_size, axis=slices.axis)
        per_slice = extract_slices(structure_mask, grid.axis)
        if case.fully_labelled:
            labelled = None
        else:
            labelled = labelled_slices_from_label(case.label.array, grid.axis)
            for s in case.empty_slices:
                if not 0 <= int(s) < per_slice.shape[0]:
                    raise DataError(f"Case '{case.case_id}': empty slice {s} is outside 0..{per_slice.shape[0] - 1}.")
                labelled[int(s)] = True
        chosen = select_slices(
            per_slice, labelled=labelled, policy=empty_policy, keep_fraction=keep_fraction, seed=seed + n
        )
        if case.empty_slices and EmptySlicePolicy.parse(empty_policy) is not EmptySlicePolicy.DROP:  # marked one by one
            marked = [int(s) for s in case.empty_slices if not per_slice[int(s)].any()]
            chosen = np.union1d(chosen, np.asarray(marked, dtype=np.int64))
        if len(chosen) == 0:
            continue
        normalized = normalize_intensity(case.image.array, slices.intensity)
        tensor, _ = prepare_slices(
            case.image,
            input_size=input_size,
            pixel_norm=pixel_norm,
            config=slices,
            indices=chosen.tolist(),
            normalized=normalized,
        )
        model_masks = grid.resize.pad(grid.resize.apply_mask(per_slice[chosen])[:, None].float())[:, 0] > 0.5
        images.append(tensor)
        masks.append(model_masks)
        ids.extend([case.case_id] * len(chosen))
        indices.extend(int(s) for s in chosen)
        originals.extend(per_slice[chosen])
        spacings.extend([slice_spacing(case.image, grid.axis)] * len(chosen))
        grids[case.case_id] = grid
    if not images:
        names = ", ".join(c.case_id for c in cases)
        raise DataError(
            f"No labelled slice in any training case ({names}). Paint the structure on at least one slice, "
            "or mark the case as fully labelled if empty slices are true background."
        )
    return SliceSamples(torch.cat(images), torch.cat(masks), ids, indices, originals, spacings, grids)


def with_views(samples: SliceSamples, views: int, augment: AugmentConfig, generator: torch.Generator) -> SliceSamples:
    """``samples`` followed by ``views`` augmented copies of each (image and mask moved together).

    The copies keep their slice's case, index and original-grid target; they serve training only
    (validation and BLO-SAM's D2 score unaugmented samples).
    """
    from samtune.train.augment import augment_batch

    images, masks = [samples.images], [samples.masks]
    for _ in range(int(views)):
        image, mask = augment_batch(samples.images, samples.masks, augment, generator)
        images.append(image)
        masks.append(mask)
    copies = int(views) + 1
    return SliceSamples(
        torch.cat(images),
        torch.cat(masks),
        samples.case_ids * copies,
        samples.slice_index * copies,
        samples.slice_masks * copies,
        samples.spacing * copies,
        samples.grids,
    )
