"""Volume -> model-input batches, and model output -> masks on the original slice grid.

``prepare_slices`` normalises intensities over the whole volume, cuts slices along the chosen
axis, makes three channels (grey repeated, or 2.5D neighbours), resizes the longest side to the
backbone's input with the aspect ratio kept, applies the backbone's pixel normalisation and pads
to ``S x S``. ``SliceGrid`` remembers how, so that masks go back to the exact voxel grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from samtune.data.intensity import normalize_intensity
from samtune.data.slicing import SliceConfig, extract_slices, resolve_axis
from samtune.data.transforms import PixelNorm, ResizeLongestSide, normalize_pixels
from samtune.data.volume import Volume
from samtune.errors import ConfigurationError


def three_channels(slices: np.ndarray, indices: Sequence[int], *, two_and_half_d: bool) -> np.ndarray:
    """Pick ``indices`` from ``(N, H, W[, C])`` slices as ``(B, H, W, 3)`` images.

    Grey slices are repeated into three channels, or with ``two_and_half_d`` the neighbours
    ``s-1, s, s+1`` (clamped at the ends) become the channels. RGB slices are kept; RGBA drops alpha.

    Raises:
        ConfigurationError: 2.5D requested on colour images.
    """
    idx = np.asarray(indices, dtype=np.int64)
    if slices.ndim == 4:
        if two_and_half_d:
            raise ConfigurationError("2.5D input needs a grey-value volume; this image is colour (RGB).")
        picked = slices[idx][..., :3]
        return np.repeat(picked, 3, axis=-1) if picked.shape[-1] == 1 else picked
    if two_and_half_d:
        last = slices.shape[0] - 1
        neighbours = np.stack([np.clip(idx - 1, 0, last), idx, np.clip(idx + 1, 0, last)], axis=-1)
        return np.moveaxis(slices[neighbours], 1, -1)
    return np.repeat(slices[idx][..., None], 3, axis=-1)


@dataclass
class SliceGrid:
    """How slices of one volume map to model inputs, for the exact way back.

    Attributes:
        axis: numpy axis the volume was sliced along.
        volume_shape: ``(K, J, I)`` of the volume.
        resize: Resize from the ``(h, w)`` slice to the model input (same for every slice).
    """

    axis: int
    volume_shape: tuple[int, int, int]
    resize: ResizeLongestSide

    @property
    def n_slices(self) -> int:
        """Number of slices along the axis."""
        return self.volume_shape[self.axis]

    def logits_to_masks(self, logits: torch.Tensor, *, threshold: float = 0.5) -> np.ndarray:
        """``(B, 1, L, L)`` or ``(B, L, L)`` logits -> ``(B, h, w)`` boolean masks on the slice grid."""
        if logits.ndim == 4:
            logits = logits[:, 0]
        probabilities = torch.sigmoid(self.resize.restore_logits(logits.float()))
        return (probabilities > threshold).cpu().numpy()

    def mask_to_model(self, mask: np.ndarray) -> torch.Tensor:
        """An ``(h, w)`` slice mask -> ``(S, S)`` boolean tensor in the model-input frame (resized, padded)."""
        resized = self.resize.apply_mask(np.asarray(mask, dtype=bool)[None])
        return self.resize.pad(resized[:, None].float())[0, 0] > 0.5

    def masks_to_volume(self, masks: np.ndarray, indices: Sequence[int], reference: Volume) -> Volume:
        """Place ``(B, h, w)`` slice masks at ``indices`` into an empty uint8 volume like ``reference``."""
        out = np.zeros(self.volume_shape, dtype=np.uint8)
        moved = np.moveaxis(out, self.axis, 0)
        for s, mask in zip(indices, np.asarray(masks)):
            moved[int(s)] = np.asarray(mask, dtype=np.uint8)
        return reference.with_array(out)


def slice_grid(volume: Volume, *, input_size: int, axis: str | int = "auto") -> SliceGrid:
    """The :class:`SliceGrid` of ``volume`` cut along ``axis`` for a model of ``input_size``."""
    numpy_axis = resolve_axis(volume, axis)
    shape = volume.shape
    h, w = (shape[a] for a in (0, 1, 2) if a != numpy_axis)
    return SliceGrid(numpy_axis, shape, ResizeLongestSide(input_size, (h, w)))


def prepare_slices(
    volume: Volume,
    *,
    input_size: int,
    pixel_norm: PixelNorm | str,
    config: SliceConfig | None = None,
    indices: Sequence[int] | None = None,
    normalized: np.ndarray | None = None,
) -> tuple[torch.Tensor, SliceGrid]:
    """Model inputs for some slices of ``volume``.

    Args:
        volume: Scalar ``(K, J, I)`` or colour ``(K, J, I, C)`` volume.
        input_size: Side ``S`` of the backbone input.
        pixel_norm: The backbone's pixel normalisation.
        config: Axis, intensity and 2.5D settings.
        indices: Slice indices along the axis (default: all).
        normalized: The volume already passed through :func:`normalize_intensity` with the same
            config (saves recomputing volume-wide percentiles for every batch).

    Returns:
        ``(B, 3, S, S)`` float32 images and the :class:`SliceGrid` to map results back.

    Raises:
        ConfigurationError: A slice index outside the volume.
    """
    config = config or SliceConfig()
    grid = slice_grid(volume, input_size=input_size, axis=config.axis)
    if indices is None:
        indices = range(grid.n_slices)
    indices = [int(s) for s in indices]
    bad = [s for s in indices if not 0 <= s < grid.n_slices]
    if bad:
        raise ConfigurationError(
            f"Slice indices {bad[:5]} are outside the volume (0..{grid.n_slices - 1} along this axis)."
        )
    values = normalized if normalized is not None else normalize_intensity(volume.array, config.intensity)
    slices = extract_slices(values, grid.axis)
    images = three_channels(slices, indices, two_and_half_d=config.two_and_half_d)
    tensor = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).permute(0, 3, 1, 2)
    tensor = normalize_pixels(grid.resize.apply_image(tensor), pixel_norm)
    return grid.resize.pad(tensor), grid
