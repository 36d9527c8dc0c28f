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
