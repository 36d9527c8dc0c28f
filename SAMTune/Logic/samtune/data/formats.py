"""File formats SAMTune reads and writes, by name suffix (no SimpleITK needed to ask)."""

from __future__ import annotations

from pathlib import Path

#: Volume formats read through SimpleITK.
IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".seg.nrrd", ".mha", ".mhd")
#: 2D picture formats, read as single-slice volumes.
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
#: Formats a label or volume can be written in.
WRITE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".seg.nrrd", ".mha")


def case_name(path: Path) -> str:
    """A file's name without its image suffix (``a.nii.gz`` and ``a.seg.nrrd`` -> ``a``)."""
    name = path.name
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem
