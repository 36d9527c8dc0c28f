"""Decoding prompts into masks: the step after the image encoder, shared by whole-volume prediction
(:mod:`samtune.predict.volume`) and the interactive session (:mod:`samtune.predict.session`):
automatic decoding (presence decision and self-prompting refinement) and prompted decoding.

Prompts arrive in the slice pixel frame (:class:`~samtune.predict.user_prompts.SlicePrompt`);
``to_model`` maps pixel coordinates into the model's input frame.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from samtune.models.runtime import DecodeFunction
from samtune.models.sam_model import SamModel
from samtune.predict.postprocess import keep_largest_component
from samtune.predict.uncertainty import slice_uncertainty
from samtune.predict.user_prompts import SlicePrompt

#: Logit written over a slice the presence decision says lacks the structure (sigmoid = 0).
ABSENT = -1.0e4
#: Refinement by the pretrained decoder (:attr:`SamModel.box_decoder`): each side of the box around
#: the fine-tuned model's mask moves out by this share of the box's width / height. Chosen on the
#: la_heart development split (pool volumes 7-9, never reported): 0, 0.05, 0.1, 0.15 gave Dice
#: 0.724, 0.738, 0.726, 0.702 after one pass.
BOX_DECODER_MARGIN = 0.05
#: Refinement passes of a model refined by its pretrained decoder (development split: one pass
#: 0.738, two 0.748).
BOX_DECODER_PASSES = 2


def decode_prompted(
    model: SamModel,
    embeddings: torch.Tensor,
    prompts: Sequence[SlicePrompt],
    to_model: Callable[[np.ndarray], np.ndarray],
    mask_to_model: Callable[[np.ndarray], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Decode each slice's objects and unite them.

    Every box is one object (carrying all the slice's points and its mask prompt); a slice without
    a box is one object. Objects go through the decoder in one call per kind (with or without a
    box, with or without a mask), since SAM's prompt encoder takes a box, or a mask, for every
    item of a batch or for none.

    Args:
        to_model: Slice pixel coordinates ``(N, 2)`` -> model-input coordinates.
        mask_to_model: An ``(H, W)`` slice mask -> ``(S, S)`` mask in the model-input frame (needed
            when a prompt carries a mask).

    Returns:
        ``(B, 1, Hl, Wl)`` low-resolution logits, the maximum over each slice's objects.
    """
    objects: list[tuple[int, np.ndarray | None, np.ndarray, np.ndarray, np.ndarray | None]] = []
    for b, prompt in enumerate(prompts):
        points = to_model(prompt.points) if len(prompt.points) else prompt.points
        boxes: list[np.ndarray | None] = [to_model(box.reshape(2, 2)).reshape(4) for box in prompt.boxes]
        mask = prompt.mask if prompt.mask is not None and prompt.mask.any() else None
        objects.extend((b, box, points, prompt.point_labels, mask) for box in boxes or [None])
    device = embeddings.device
    result: torch.Tensor | None = None
    for with_box in (True, False):
        for with_mask in (True, False):
            group = [o for o in objects if (o[1] is not None) == with_box and (o[4] is not None) == with_mask]
            if not group:
                continue
            owners = torch.as_tensor([o[0] for o in group], device=device)
            boxes_t = masks_t = None
            if with_box:
                stacked = np.stack([o[1] for o in group if o[1] is not None])
                boxes_t = torch.as_tensor(stacked, dtype=torch.float32, device=device)
            if with_mask:
                if mask_to_model is None:
                    raise ValueError("A mask prompt needs mask_to_model to place it in the model's input frame.")
                masks_t = model.mask_input(torch.stack([mask_to_model(o[4]) for o in group if o[4] is not None]))
            points_t = pad_points([(o[2], o[3]) for o in group], device)
            logits, _ = model.decode(embeddings.index_select(0, owners), boxes=boxes_t, points=points_t,
                                     mask_prompt=masks_t)  # fmt: skip
            if result is None:
                result = torch.full((len(prompts), *logits.shape[1:]), -torch.inf, device=device)
            for row, owner in enumerate(owners.tolist()):  # a handful of objects: a loop is clearest
                result[owner] = torch.maximum(result[owner], logits[row].float())
    assert result is not None  # every prompt is non-empty, so at least one group ran
    return result


def mask_box(mask: np.ndarray, margin: float = 0.0) -> np.ndarray | None:
    """``(4,)`` XYXY box of the largest connected object of ``mask`` (``H x W``); ``None`` when empty.

    The box training simulates (:func:`samtune.train.simulated_prompts.simulate_box`), without the
    jitter; ``margin`` moves each side out by that share of the box's width / height, within the mask.
    """
    if not mask.any():
        return None
    rows, cols = np.nonzero(keep_largest_component(mask))
    box = np.array([cols.min(), rows.min(), cols.max(), rows.max()], dtype=np.float32)
    if margin:
        grow = margin * (box[2:] - box[:2])
        high = np.array(mask.shape[::-1], dtype=np.float32) - 1
        box = np.concatenate([np.maximum(box[:2] - grow, 0), np.minimum(box[2:] + grow, high)])
    return box


def decode_automatic(
    model: SamModel,
    embeddings: torch.Tensor,
    *,
    presence_threshold: float | None = None,
    refine: int | None = None,
    threshold: float = 0.5,
    decode: DecodeFunction | None = None,
    refine_decode: DecodeFunction | None = None,
) -> torch.Tensor:
    """Automatic (prompt-free) masks: the decoder's answer without a prompt, refined, then gated by presence.

    Args:
        embeddings: ``(B, C, He, We)`` image embeddings.
        presence_threshold: Drop the mask of a slice whose presence probability (sigmoid of the IoU
            head, trained as a presence head with ``presence_weight``) is below this; ``None`` =
            the model's own (:attr:`SamModel.presence_threshold`, chosen on validation data; a
            model without a presence head has none), ``0`` = keep every mask.
        refine: Self-prompting passes: each feeds the box around the slice's current mask back to
            a decoder, on the same embedding (a decoder pass each, no encoder): the model's
            pretrained decoder when it kept one (:attr:`SamModel.box_decoder`, the box widened by
            :data:`BOX_DECODER_MARGIN`), its own otherwise. ``None`` = the model's own
            (:attr:`SamModel.refine_passes`: 1 for models trained with boxes too, 2 for models
            refined by their pretrained decoder).
        threshold: Foreground probability of the masks the refinement boxes are drawn around.
        decode: The decoder to run (:func:`samtune.models.runtime.decoder_runtime`); default
            ``model.decode`` in PyTorch.
        refine_decode: The decoder of the refinement passes
            (:attr:`samtune.models.runtime.DecoderRuntime.refine`); default ``decode``, or the
            pretrained decoder's ``decode`` in PyTorch for a model that kept one.

    Returns:
        ``(B, 1, Hl, Wl)`` low-resolution logits; slices judged absent hold :data:`ABSENT`.
    """
    return _automatic(model, embeddings, presence_threshold, refine, threshold, decode, refine_decode, ranked=False)[0]


def decode_automatic_ranked(
    model: SamModel, embeddings: torch.Tensor, **options: Any
) -> tuple[torch.Tensor, np.ndarray]:
    """:func:`decode_automatic` (the same keyword options) and each slice's uncertainty ``(B,)``
    (:func:`samtune.predict.uncertainty.slice_uncertainty`), from the same passes."""
    logits, scores = _automatic(model, embeddings, ranked=True, **options)
    assert scores is not None
    return logits, scores


def _automatic(
    model: SamModel,
    embeddings: torch.Tensor,
    presence_threshold: float | None = None,
    refine: int | None = None,
    threshold: float = 0.5,
    decode: DecodeFunction | None = None,
    refine_decode: DecodeFunction | None = None,
    *,
    ranked: bool,
) -> tuple[torch.Tensor, np.ndarray | None]:
    passes = model.refine_passes if refine is None else int(refine)
    gate = model.presence_threshold if presence_threshold is None else float(presence_threshold)
    first, low_res, score = automatic_passes(
        model, embeddings, refine=passes, threshold=threshold, gate=gate or 0.0, decode=decode,
        refine_decode=refine_decode,
    )  # fmt: skip
    scores = None
    if ranked:
        scores = slice_uncertainty(first, low_res, score, presence_threshold=gate, refine=passes, threshold=threshold)
    return (gate_logits(low_res, score, gate) if gate else low_res), scores


def automatic_passes(
    model: SamModel,
    embeddings: torch.Tensor,
    *,
    refine: int,
    threshold: float = 0.5,
    gate: float = 0.0,
    decode: DecodeFunction | None = None,
    refine_decode: DecodeFunction | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(first-pass logits, refined logits, presence logits (B,))`` of automatic decoding, ungated.

    The first pass has no prompt; each of ``refine`` passes decodes again the slices with a mask,
    given the box around it (:func:`mask_box`), skipping slices whose presence probability is below
    ``gate`` (the gate drops them anyway). With ``refine=0`` both logits are the first pass. The
    refinement passes run ``refine_decode``: by default the model's pretrained decoder when it kept
    one (:attr:`SamModel.box_decoder`, boxes widened by :data:`BOX_DECODER_MARGIN`), else ``decode``.
    """
    if decode is None:
        decode = _torch_decode(model)
    reference = model.box_decoder
    margin = BOX_DECODER_MARGIN if reference is not None else 0.0
    if refine_decode is None:
        refine_decode = decode if reference is None else _torch_decode(reference)

    first, score = decode(embeddings, None)
    first = first.float()
    low_res = first.clone() if refine else first
    cut = float(np.log(threshold / (1 - threshold)))
    present = (torch.sigmoid(score[:, 0].float()) >= gate).cpu().numpy()
    for _ in range(int(refine)):
        masks = (model.upscale_logits(low_res)[:, 0] > cut).cpu().numpy()
        boxes = [mask_box(m, margin) if keep else None for m, keep in zip(masks, present)]
        rows = [b for b, box in enumerate(boxes) if box is not None]
        if not rows:
            break
        index = torch.as_tensor(rows, device=embeddings.device)
        box_tensor = torch.as_tensor(np.stack([box for box in boxes if box is not None]), device=embeddings.device)
        refined, _ = refine_decode(embeddings.index_select(0, index), box_tensor)
        low_res[index] = refined.float()
    return first, low_res, score[:, 0]


def _torch_decode(model: SamModel) -> DecodeFunction:
    def decode(batch: torch.Tensor, boxes: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        return model.decode(batch, boxes=boxes)

    return decode


def gate_logits(logits: torch.Tensor, score: torch.Tensor, threshold: float) -> torch.Tensor:
    """``logits (B, ...)`` with every slice whose presence probability ``sigmoid(score (B,))`` is below
    ``threshold`` set to :data:`ABSENT`."""
    absent = torch.sigmoid(score.float()) < threshold
    return torch.where(absent.view(-1, *([1] * (logits.ndim - 1))), torch.full_like(logits, ABSENT), logits)


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


__all__ = [
    "ABSENT",
    "automatic_passes",
    "decode_automatic",
    "decode_automatic_ranked",
    "decode_prompted",
    "gate_logits",
    "mask_box",
    "pad_points",
]
