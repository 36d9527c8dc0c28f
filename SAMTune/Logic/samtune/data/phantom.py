"""Deterministic synthetic MR/CT-like phantoms with label maps, for tests and the demo.

A phantom is a body ellipse with smooth texture, one or two blobby target structures whose size
changes along ``k`` (label 1, 2), partial-volume blur, an MR bias field and noise. The same seed
always gives the same phantom.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from samtune.data.volume import Geometry, Volume
from samtune.errors import ConfigurationError


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int, int], scale: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: coarse random grid, trilinearly upsampled."""
    coarse_shape = tuple(max(2, s // scale + 2) for s in shape)
    coarse = rng.uniform(-1.0, 1.0, size=coarse_shape)
    grids = [np.linspace(0, c - 1.001, s) for c, s in zip(coarse_shape, shape)]
    k, j, i = np.meshgrid(*grids, indexing="ij")
    k0, j0, i0 = k.astype(int), j.astype(int), i.astype(int)
    dk, dj, di = k - k0, j - j0, i - i0
    out = np.zeros(shape)
    for a in (0, 1):
        for b in (0, 1):
            for c in (0, 1):
                weight = (dk if a else 1 - dk) * (dj if b else 1 - dj) * (di if c else 1 - di)
                out += weight * coarse[k0 + a, j0 + b, i0 + c]
    return out


def _blur(array: np.ndarray, passes: int = 2) -> np.ndarray:
    """Separable [1, 2, 1] / 4 blur along every axis (partial-volume effect)."""
    out = array.astype(np.float64)
    for _ in range(passes):
        for axis in range(out.ndim):
            padded = np.pad(out, [(1, 1) if a == axis else (0, 0) for a in range(out.ndim)], mode="edge")
            lo = np.take(padded, range(0, out.shape[axis]), axis=axis)
            mid = np.take(padded, range(1, out.shape[axis] + 1), axis=axis)
            hi = np.take(padded, range(2, out.shape[axis] + 2), axis=axis)
            out = 0.25 * lo + 0.5 * mid + 0.25 * hi
    return out


def make_phantom(
    *,
    shape: tuple[int, int, int] = (24, 96, 96),
    spacing: Sequence[float] = (1.0, 1.0, 2.5),
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    direction: Sequence[float] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
    modality: str = "mr",
    structures: int = 1,
    seed: int = 0,
) -> tuple[Volume, Volume]:
    """Build a phantom image and its label map.

    Args:
        shape: Grid ``(K, J, I)``.
        spacing: ITK-order spacing ``(sx, sy, sz)`` in mm (default: thick slices along ``k``).
        origin: Position of voxel (0, 0, 0) in mm.
        direction: 3x3 direction cosines, row-major.
        modality: ``"mr"`` (arbitrary units, bias field, Rician-like noise) or ``"ct"`` (Hounsfield units).
        structures: 1 or 2 target structures (label values 1 and 2).
        seed: Random seed; equal seeds give identical phantoms.

    Returns:
        ``(image, label)``: float32 image and uint8 label map on the same grid.
    """
    if modality not in ("mr", "ct"):
        raise ConfigurationError(f"modality must be 'mr' or 'ct', got '{modality}'.")
    if structures not in (1, 2):
        raise ConfigurationError(f"structures must be 1 or 2, got {structures}.")
    if min(shape) < 1 or len(shape) != 3:
        raise ConfigurationError(f"shape must be three positive sizes (K, J, I), got {shape}.")
    rng = np.random.default_rng(seed)
    n_k, n_j, n_i = shape
    k, j, i = np.meshgrid(np.linspace(-1, 1, n_k), np.linspace(-1, 1, n_j), np.linspace(-1, 1, n_i), indexing="ij")
    wobble = 1.0 + 0.15 * _smooth_noise(rng, shape, 16)
    body = ((j / 0.82) ** 2 + (i / 0.9) ** 2) * wobble < 1.0

    label = np.zeros(shape, dtype=np.uint8)
    centres = [(rng.uniform(-0.2, 0.1), rng.uniform(-0.25, 0.05))]
    if structures == 2:
        centres.append((rng.uniform(0.25, 0.4), rng.uniform(0.25, 0.4)))
    for value, (cj, ci) in enumerate(centres, start=1):
        radius = 0.32 if value == 1 else 0.18
        # Size varies along k like an organ: largest in the middle, gone near the ends.
        profile = np.clip(1.0 - (k / 0.8) ** 2, 0.0, None)
        shape_noise = 1.0 + 0.2 * _smooth_noise(rng, shape, 12)
        distance = np.sqrt(((j - cj) / 1.1) ** 2 + (i - ci) ** 2) * shape_noise
        label[(distance < radius * np.sqrt(profile)) & body] = value

    if modality == "ct":
        base = np.where(body, 40.0, -1000.0) + np.where(body, 25.0 * _smooth_noise(rng, shape, 8), 0.0)
        for value, hu in ((1, 130.0), (2, -80.0)):
            base = np.where(label == value, hu, base)
        image = _blur(base, passes=1) + rng.normal(0.0, 12.0, size=shape)
    else:
        base = np.where(body, 300.0, 5.0) + np.where(body, 40.0 * _smooth_noise(rng, shape, 8), 0.0)
        for value, level in ((1, 700.0), (2, 520.0)):
            base = np.where(label == value, level, base)
        bias = 1.0 + 0.25 * _smooth_noise(rng, shape, 48)
        clean = _blur(base, passes=1) * bias
        noise = 20.0
        image = np.sqrt((clean + rng.normal(0, noise, shape)) ** 2 + rng.normal(0, noise, shape) ** 2)
    geometry = Geometry(spacing=tuple(spacing), origin=tuple(origin), direction=tuple(direction))  # type: ignore[arg-type]
    return Volume(image.astype(np.float32), geometry), Volume(label, geometry)


def write_phantom_cases(
    folder: str | Path,
    n: int = 3,
    *,
    shape: tuple[int, int, int] = (6, 48, 48),
    structure: str = "target",
    first_seed: int = 0,
) -> Path:
    """Write ``n`` fully labelled phantoms (NIfTI image + label) and a training manifest for them.

    Cases are ``case<seed>`` with files ``image<seed>.nii.gz`` and ``label<seed>.nii.gz``; the
    manifest (``folder/manifest.json``, relative paths) names label value 1 ``structure``. Used by
    dry runs, tests and benchmarks.

    Returns:
        The manifest path.
    """
    import json

    from samtune.data.image_io import write_label, write_volume

    folder = Path(folder)
    cases = []
    for seed in range(first_seed, first_seed + n):
        image, label = make_phantom(shape=shape, seed=seed)
        write_volume(image, folder / f"image{seed}.nii.gz")
        write_label(label, folder / f"label{seed}.nii.gz")
        cases.append({"id": f"case{seed}", "image": f"image{seed}.nii.gz", "label": f"label{seed}.nii.gz",
                      "structures": {structure: 1}, "fully_labelled": True})  # fmt: skip
    path = folder / "manifest.json"
    path.write_text(json.dumps({"cases": cases}), encoding="utf-8")
    return path


def make_picture_phantom(
    *, size: tuple[int, int] = (140, 192), seed: int = 0, lesion: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """A dermoscopy-like RGB picture and its 0/255 mask: skin-toned background with texture and uneven
    lighting, one irregular dark lesion at a random place and size (none when ``lesion`` is false).

    Args:
        size: ``(height, width)`` in pixels.
        seed: The same seed always gives the same picture.

    Returns:
        ``(picture, mask)``: ``uint8`` arrays of shape ``(H, W, 3)`` and ``(H, W)``.
    """
    height, width = size
    if min(height, width) < 16:
        raise ConfigurationError(f"A picture phantom needs at least 16 x 16 pixels, got {height} x {width}.")
    rng = np.random.default_rng(seed)
    texture = _smooth_noise(rng, (1, height, width), max(4, min(size) // 24))[0]
    light = _smooth_noise(rng, (1, height, width), max(8, min(size) // 2))[0]
    j, i = np.mgrid[0:height, 0:width].astype(np.float64)
    mask = np.zeros(size, dtype=bool)
    if lesion:
        radius = rng.uniform(0.15, 0.3) * min(size)
        cj = rng.uniform(radius, height - radius)
        ci = rng.uniform(radius, width - radius)
        angle = np.arctan2(j - cj, i - ci)
        wobble = sum(rng.uniform(0.04, 0.12) * np.cos(n * angle + rng.uniform(0, 2 * np.pi)) for n in (2, 3, 5))
        stretch = rng.uniform(0.7, 1.0)
        distance = np.hypot((j - cj) / stretch, i - ci)
        mask = distance <= radius * (1.0 + wobble)
    skin = np.array([rng.uniform(200, 235), rng.uniform(150, 185), rng.uniform(130, 160)])
    spot = np.array([rng.uniform(90, 130), rng.uniform(55, 80), rng.uniform(40, 65)])
    inside = _blur(mask.astype(np.float64)[None], passes=2)[0]  # a soft edge
    colour = (1 - inside)[..., None] * skin + inside[..., None] * spot
    colour = colour * (1.0 + 0.12 * light)[..., None] + 10.0 * texture[..., None]
    colour += rng.normal(0.0, 4.0, size=colour.shape)
    return np.clip(colour, 0, 255).astype(np.uint8), (mask * 255).astype(np.uint8)


def write_picture_cases(
    images: str | Path,
    masks: str | Path,
    n: int = 8,
    *,
    size: tuple[int, int] = (140, 192),
    first_seed: int = 0,
    image_format: str = "jpg",
    mask_suffix: str = "_mask.png",
) -> list[str]:
    """Write ``n`` picture phantoms (``lesion<seed>.<image_format>``) and their 0/255 masks
    (``lesion<seed><mask_suffix>``) into two folders, as a 2D dataset ships; every fourth has no lesion.

    Returns:
        The case names.
    """
    from PIL import Image

    images, masks = Path(images), Path(masks)
    names = []
    for seed in range(first_seed, first_seed + n):
        picture, mask = make_picture_phantom(size=size, seed=seed, lesion=seed % 4 != 3)
        name = f"lesion{seed}"
        Image.fromarray(picture).save(images / f"{name}.{image_format}", quality=95)
        Image.fromarray(mask).save(masks / f"{name}{mask_suffix}")
        names.append(name)
    return names
