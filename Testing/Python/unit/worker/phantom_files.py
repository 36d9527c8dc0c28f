"""Synthetic phantom cases written to disk with a training manifest (worker and torchrun tests)."""

from __future__ import annotations

import json
from pathlib import Path

from samtune.data import make_phantom, write_label, write_volume


def write_phantom_manifest(folder: Path, n: int = 3) -> Path:
    """``n`` fully labelled 6x48x48 phantoms (structure ``target`` = 1) and ``folder/manifest.json``."""
    cases = []
    for seed in range(n):
        image, label = make_phantom(shape=(6, 48, 48), seed=seed)
        write_volume(image, folder / f"image{seed}.nii.gz")
        write_label(label, folder / f"label{seed}.nii.gz")
        cases.append({"id": f"case{seed}", "image": f"image{seed}.nii.gz", "label": f"label{seed}.nii.gz",
                      "structures": {"target": 1}, "fully_labelled": True})  # fmt: skip
    path = folder / "manifest.json"
    path.write_text(json.dumps({"cases": cases}), encoding="utf-8")
    return path
