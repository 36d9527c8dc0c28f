"""Whole-volume prediction: automatic (prompt-free) or prompted, batched over slices.

The model sees one slice at a time (2D SAM); slices are prepared in batches by the data
pipeline, encoded, decoded with each slice's prompts, mapped back exactly onto the slice grid and
reassembled into a label volume with the input's geometry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from samtune.data.intensity import normalize_intensity
from samtune.data.pipeline import SliceConfig, prepare_slices
from samtune.data.slicing import resolve_axis
from samtune.data.volume import Volume
from samtune.errors import ConfigurationError
from samtune.models.runtime import RUNTIMES, encoder_runtime
from samtune.models.sam_model import SamModel
from samtune.predict.postprocess import keep_largest_component
from samtune.predict.prompts import SlicePrompt

logger = logging.getLogger(__name__)

#: ``progress(done, total, message)``; called after every batch.
ProgressCallback = Callable[[int, int, str], None]


@dataclass
class PredictConfig:
    """How to run prediction over a volume.

    Attributes:
        threshold: Probability above which a pixel is foreground, in (0, 1).
        batch_size: Slices encoded together; 1 is fastest on a CPU, larger batches pay on a GPU.
        slice_range: ``(start, stop)`` slice indices along the slice axis, stop exclusive;
            ``None`` for the whole volume.
        slices: Slicing axis, intensity normalisation and 2.5D option.
        label_value: Value written for foreground voxels in the output label map.
        runtime: Image-encoder runtime: ``auto`` (ONNX Runtime on a CPU when installed, else PyTorch),
            ``torch`` or ``onnxruntime`` (see :mod:`samtune.models.runtime`).
        slice_search: Automatic mode only. ``0`` segments every slice. ``n >= 2`` first segments
            every ``n``-th slice, then grows outwards from each slice where the structure was found
            until the structure ends, so slices far from the structure are never encoded (see
            :func:`search_slices`). A structure that shows on fewer than ``n`` consecutive slices
            between two sampled slices can be missed.
    """

    threshold: float = 0.5
    batch_size: int = 1
    slice_range: tuple[int, int] | None = None
    slices: SliceConfig = field(default_factory=SliceConfig)
    label_value: int = 1
    runtime: str = "auto"
    slice_search: int = 0
    largest_component: bool = False

    def __post_init__(self) -> None:
        if int(self.slice_search) < 0 or int(self.slice_search) == 1:
            raise ConfigurationError(
                f"slice_search must be 0 (segment every slice) or a step of at least 2, got {self.slice_search}."
            )
        if str(self.runtime).lower() not in RUNTIMES:
            raise ConfigurationError(f"runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}.")
        if not 0.0 < float(self.threshold) < 1.0:
            raise ConfigurationError(f"threshold must be a probability strictly between 0 and 1, got {self.threshold}.")
        if int(self.batch_size) < 1:
            raise ConfigurationError(f"batch_size must be at least 1, got {self.batch_size}.")
        if not 1 <= int(self.label_value) <= 65535:
            raise ConfigurationError(f"label_value must be in 1..65535, got {self.label_value}.")
        if self.slice_range is not None:
            start, stop = (int(v) for v in self.slice_range)
            if start < 0 or stop <= start:
                raise ConfigurationError(
                    f"slice_range must be (start, stop) with 0 <= start < stop, got {self.slice_range}."
                )
            self.slice_range = (start, stop)


def _slice_indices(n_slices: int, config: PredictConfig, prompts: dict[int, SlicePrompt] | None) -> list[int]:
    start, stop = config.slice_range if config.slice_range is not None else (0, n_slices)
    if start >= n_slices:
        raise ConfigurationError(
            f"slice_range starts at {start} but the volume has only {n_slices} slices along this axis."
        )
    stop = min(stop, n_slices)
    if prompts is None:
        return list(range(start, stop))
    outside = [s for s in prompts if not 0 <= s < n_slices]
    if outside:
        raise ConfigurationError(
            f"Prompts on slices {outside[:5]} lie outside the volume (0..{n_slices - 1} along the axis)."
        )
    return [s for s in sorted(prompts) if start <= s < stop and not prompts[s].is_empty]


def _decode_prompted(
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
        points_t = _pad_points([(o[2], o[3]) for o in group], device)
        logits, _ = model.decode(embeddings.index_select(0, owners), boxes=boxes_t, points=points_t)
        if result is None:
            result = torch.full((len(prompts), *logits.shape[1:]), -torch.inf, device=device)
        for row, owner in enumerate(owners.tolist()):  # a handful of objects: a loop is clearest
            result[owner] = torch.maximum(result[owner], logits[row].float())
    assert result is not None  # every prompt is non-empty, so at least one group ran
    return result


def _pad_points(
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


def search_slices(
    indices: Sequence[int], step: int, segment: Callable[[list[int]], list[bool]], batch_size: int = 1
) -> list[int]:
    """Which of ``indices`` (ordered, contiguous) to segment when the structure is sought coarse to fine.

    Every ``step``-th slice (and the last) is segmented first; then, from every slice where
    ``segment`` found foreground, the neighbouring slices are segmented one after another, outwards,
    until a slice without foreground ends each run. Every slice connected (along the slice axis) to
    a sampled slice with foreground is therefore segmented exactly as a full pass would.

    Args:
        indices: The slices in range, ascending and contiguous.
        step: Sampling step (>= 2).
        segment: Segments the given slices and says, per slice, whether it found foreground.
        batch_size: Slices handed to ``segment`` at once.

    Returns:
        The slices segmented, ascending.
    """
    if not indices:
        return []
    first, last = indices[0], indices[-1]
    found: dict[int, bool] = {}

    def run(batch: list[int]) -> None:
        for start in range(0, len(batch), batch_size):
            chunk = batch[start : start + batch_size]
            found.update(zip(chunk, segment(chunk)))

    run(sorted(set(indices[::step]) | {last}))
    frontier = sorted(s for s, hit in found.items() if hit)
    while frontier:
        wanted = sorted({n for s in frontier for n in (s - 1, s + 1) if first <= n <= last and n not in found})
        run(wanted)
        frontier = [n for n in wanted if found[n]]
    return sorted(found)


@torch.inference_mode()
def predict_volume(
    model: SamModel,
    volume: Volume,
    config: PredictConfig | None = None,
    *,
    prompts: dict[int, SlicePrompt] | None = None,
    progress: ProgressCallback | None = None,
) -> Volume:
    """Segment ``volume`` slice by slice and return a label volume on the same grid.

    Args:
        model: Any backbone from :func:`samtune.models.build_model` (or a fine-tuned one).
        volume: Scalar ``(K, J, I)`` or RGB image.
        config: Threshold, batch size, slice range and slicing options.
        prompts: Slice index (along the slice axis) -> prompts in that slice's pixel frame. ``None``
            runs automatic (prompt-free) mode on every slice in range; with prompts only the
            prompted slices are segmented and the rest stay 0.
        progress: Called as ``progress(done_slices, total_slices, message)`` after each batch.

    Returns:
        A ``uint8`` (or ``uint16`` for label values above 255) label volume with ``volume``'s grid
        and geometry: ``config.label_value`` inside, 0 outside.
    """
    config = config or PredictConfig()
    axis = resolve_axis(volume, config.slices.axis)
    n_slices = volume.shape[axis]
    indices = _slice_indices(n_slices, config, prompts)
    dtype = np.uint8 if config.label_value <= 255 else np.uint16
    out = np.zeros(volume.shape, dtype=dtype)
    out_slices = np.moveaxis(out, axis, 0)
    device = next(model.parameters()).device
    model.eval()
    total = len(indices)
    if prompts is not None and total == 0:
        logger.warning("No prompted slice inside the requested range: the output is empty.")
    normalized = normalize_intensity(volume.array, config.slices.intensity) if total else None
    encode = encoder_runtime(model, config.runtime).encode if total else model.encode
    done = 0

    def segment(batch: list[int]) -> list[bool]:
        nonlocal done
        images, grid = prepare_slices(
            volume,
            input_size=model.input_size,
            pixel_norm=model.pixel_norm,
            config=config.slices,
            indices=batch,
            normalized=normalized,
        )
        embeddings = encode(images.to(device)).to(device)
        if prompts is None:
            low_res, _ = model.decode(embeddings)
        else:
            low_res = _decode_prompted(model, embeddings, [prompts[s] for s in batch], grid.resize.apply_coords)
        masks = grid.logits_to_masks(low_res.float(), threshold=config.threshold)
        for s, mask in zip(batch, masks):
            out_slices[s][mask] = config.label_value
        done += len(batch)
        if progress is not None:
            progress(min(done, total), total, "Segmenting slices")
        return [bool(mask.any()) for mask in masks]

    if prompts is None and config.slice_search >= 2:
        segmented = search_slices(indices, config.slice_search, segment, config.batch_size)
        logger.info("Slice search segmented %d of %d slices.", len(segmented), total)
        if progress is not None and done < total:
            progress(total, total, "Segmenting slices")
    else:
        for start in range(0, total, config.batch_size):
            segment(indices[start : start + config.batch_size])
    if config.largest_component:
        out[~keep_largest_component(out)] = 0
    return volume.with_array(out)
