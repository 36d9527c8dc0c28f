"""The peer baseline of the la_heart study: a 2D U-Net (MONAI) trained from scratch, no SAM.

It is what a user would pick instead of fine-tuning SAM: ``monai.networks.nets.UNet`` on one grey
channel, trained on the same ground-truth slices SAMTune trains on (``samtune.train.build_samples``
with the same empty-slice policy, ``keep_fraction`` 0.1 and seed), for the same wall-clock budget as
the SAMTune run it is compared with. Inputs use SAMTune's geometry: the longest side resized to
``size`` with the aspect ratio kept, LiteMedSAM's ``minmax`` pixel normalisation, zero padding to
``size x size``; channel 0 of the three repeated grey channels is the input.

Training: DiceCE loss (sigmoid), AdamW, random flips of both in-plane axes (p = 0.5 each), batches
drawn from a seeded permutation of the slices, learning rate decayed with a cosine over the time
budget. The clock starts when ``train_unet`` is called, so slice preparation counts against the
budget. Prediction segments every slice of a volume along one axis (sigmoid > 0.5) and maps each
mask back onto the slice grid exactly as SAMTune does (``SliceGrid.logits_to_masks``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.losses import DiceCELoss
from monai.networks.nets import UNet

from samtune.data import Volume, prepare_slices
from samtune.data.intensity import PixelNorm, normalize_intensity
from samtune.data.pipeline import SliceConfig, slice_grid
from samtune.data.slicing import assemble_slices
from samtune.train import TrainingCase, build_samples

CHANNELS = (16, 32, 64, 128, 256)
STRIDES = (2, 2, 2, 2)
PIXEL_NORM = PixelNorm.MINMAX  # LiteMedSAM's, the backbone of the SAMTune runs it is compared with
KEEP_FRACTION = 0.1  # SAMTune's share of empty slices kept under the keep_fraction policy
AXIS = "k"  # training slices are cut along k, as in the study (benchmarks/common.py)


def build_unet() -> UNet:
    """The peer network: a 2D residual U-Net, one input channel, one output logit."""
    return UNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        channels=CHANNELS,
        strides=STRIDES,
        num_res_units=2,
    )


def _check_size(size: int) -> None:
    factor = math.prod(STRIDES)
    if size <= 0 or size % factor:
        raise ValueError(f"size must be a positive multiple of {factor} (the U-Net's total stride), got {size}.")


def _flip(images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip each sample of ``(B, 1, S, S)`` images and masks along each in-plane axis with p = 0.5."""
    for dim in (-2, -1):
        chosen = (torch.rand(images.shape[0], generator=generator) < 0.5).view(-1, 1, 1, 1)
        images = torch.where(chosen, images.flip(dim), images)
        masks = torch.where(chosen, masks.flip(dim), masks)
    return images, masks


def train_unet(
    cases: Sequence[TrainingCase],
    *,
    seconds: float,
    seed: int,
    empty_policy: str = "balanced",
    size: int = 128,
    batch_size: int = 8,
    lr: float = 1e-3,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train a MONAI 2D UNet from scratch on the ground-truth slices of ``cases`` for ``seconds`` of wall time.

    Slices are cut along ``AXIS`` (``k``). At least one step is taken, even when the budget is spent
    before the first one.

    Returns:
        The model in eval mode, and ``{"steps", "seconds", "train_slices", "size", "parameters"}``
        (``seconds``: wall time of the whole call).
    """
    started = time.perf_counter()
    _check_size(size)
    samples = build_samples(
        cases,
        input_size=size,
        pixel_norm=PIXEL_NORM,
        slices=SliceConfig(AXIS),
        empty_policy=empty_policy,
        keep_fraction=KEEP_FRACTION,
        seed=seed,
    )
    images = samples.images[:, :1].contiguous()  # the three channels are the same grey slice
    masks = samples.masks[:, None].float()
    n = images.shape[0]

    with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the caller's global RNG
        torch.manual_seed(seed)
        model = build_unet()
    generator = torch.Generator().manual_seed(seed)
    loss_fn = DiceCELoss(sigmoid=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)

    model.train()
    steps = 0
    order = torch.randperm(n, generator=generator)
    position = 0
    while True:
        if position >= n:
            order = torch.randperm(n, generator=generator)
            position = 0
        batch = order[position : position + batch_size]
        position += batch_size
        x, y = _flip(images[batch], masks[batch], generator)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        steps += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            break
        for group in optimizer.param_groups:
            group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * elapsed / seconds))
    model.eval()
    info: dict[str, Any] = {
        "steps": steps,
        "seconds": time.perf_counter() - started,
        "train_slices": n,
        "size": size,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    return model, info


@torch.no_grad()
def predict_unet(
    model: torch.nn.Module, image: Volume, *, axis: str = "k", size: int = 128, batch: int = 16
) -> np.ndarray:
    """Boolean mask of the whole volume, slice by slice along ``axis``.

    Returns:
        ``bool`` array of the shape of ``image.array`` (numpy order ``(K, J, I)``).
    """
    _check_size(size)
    model.eval()
    device = next(model.parameters()).device
    config = SliceConfig(axis)
    normalized = normalize_intensity(image.array, config.intensity)
    grid = slice_grid(image, input_size=size, axis=axis)
    out = []
    for start in range(0, grid.n_slices, batch):
        indices = list(range(start, min(start + batch, grid.n_slices)))
        inputs, _ = prepare_slices(
            image, input_size=size, pixel_norm=PIXEL_NORM, config=config, indices=indices, normalized=normalized
        )
        logits = model(inputs[:, :1].contiguous().to(device))
        out.append(grid.logits_to_masks(logits.float().cpu()))
    return np.ascontiguousarray(assemble_slices(np.concatenate(out), grid.axis), dtype=bool)
