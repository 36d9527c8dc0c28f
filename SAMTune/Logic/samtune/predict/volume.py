"""Whole-volume prediction: automatic (prompt-free) or prompted, batched over slices.

The model sees one slice at a time (2D SAM); slices are prepared in batches by the data
pipeline, encoded, decoded with each slice's prompts, mapped back exactly onto the slice grid and
reassembled into a label volume with the input's geometry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch

from samtune.data.intensity import normalize_intensity
from samtune.data.pipeline import prepare_slices
from samtune.data.slicing import resolve_axis
from samtune.data.volume import Volume
from samtune.errors import ConfigurationError
from samtune.models.embedding_store import EmbeddingStore, StoredEncoder
from samtune.models.runtime import (
    DecoderRuntime,
    EncoderRuntime,
    decoder_runtime,
    encoder_runtime,
    stored_runtime_encoder,
)
from samtune.models.sam_model import SamModel
from samtune.predict.config import PredictConfig
from samtune.predict.decode import decode_automatic, decode_automatic_ranked, decode_prompted
from samtune.predict.postprocess import keep_largest_component
from samtune.predict.user_prompts import SlicePrompt

logger = logging.getLogger(__name__)

#: ``progress(done, total, message)``; called after every batch.
ProgressCallback = Callable[[int, int, str], None]


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
    store: EmbeddingStore | bool = True,
    runtimes: tuple[EncoderRuntime, DecoderRuntime] | None = None,
    uncertainty: dict[int, float] | None = None,
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
        store: Where slice embeddings are kept for reuse (:mod:`samtune.models.embedding_store`):
            ``True`` the per-user store (unless ``SAMTUNE_EMBEDDING_STORE_MB=0``), ``False`` none.
        runtimes: The model's encoder and decoder runtimes, resolved once by a caller that segments
            many images with one model (resolving costs about 0.25 s: the weights are fingerprinted);
            default: resolved here from ``config.runtime``.
        uncertainty: Automatic mode: filled with each segmented slice's uncertainty (which slice to
            correct next; :mod:`samtune.predict.uncertainty`), at no extra model pass.

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
    encoder, decoder = runtimes if runtimes is not None else (None, None)
    if total:  # resolved here unless the caller did (prompted runs need no decoder runtime)
        encoder = encoder if encoder is not None else encoder_runtime(model, config.runtime)
        if prompts is not None:
            decoder = None
        elif decoder is None:
            decoder = decoder_runtime(model, config.runtime, precision=config.decoder_precision)
    encode = stored_runtime_encoder(model, encoder, store) if encoder is not None else model.encode
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
        if decoder is not None:
            settings = {"presence_threshold": config.presence_threshold, "refine": config.refine,
                        "threshold": config.threshold, "decode": decoder.decode,
                        "refine_decode": decoder.refine}  # fmt: skip
            if uncertainty is None:
                low_res = decode_automatic(model, embeddings, **settings)  # type: ignore[arg-type]
            else:
                low_res, scores = decode_automatic_ranked(model, embeddings, **settings)
                uncertainty.update({int(s): float(u) for s, u in zip(batch, scores)})
        else:
            assert prompts is not None
            low_res = decode_prompted(model, embeddings, [prompts[s] for s in batch], grid.resize.apply_coords,
                                      grid.mask_to_model)  # fmt: skip
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
    if isinstance(encode, StoredEncoder):
        logger.info("Embedding store: %d slices reused, %d encoded.", encode.hits, encode.misses)
        encode.store.prune()
    if config.largest_component:
        out[~keep_largest_component(out)] = 0
    return volume.with_array(out)
