"""File formats SAMTune reads and writes, by name suffix (no SimpleITK needed to ask), and the check that
an output file can be written before any work starts."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from samtune.errors import OutputError

#: Volume formats read through SimpleITK.
IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".seg.nrrd", ".mha", ".mhd")
#: 2D picture formats, read as single-slice volumes.
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
#: Formats a label or volume can be written in.
WRITE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".seg.nrrd", ".mha")
#: Lossless picture formats a single-slice mask can be written in (JPEG is lossy: masks of JPEG pictures are PNG).
MASK_PICTURE_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")
#: Label-map formats ``predict`` writes (MetaImage ``.mhd`` is two files and cannot be written atomically).
OUTPUT_SUFFIXES = WRITE_SUFFIXES + MASK_PICTURE_SUFFIXES
#: Everything SAMTune reads as an image or a label map, volumes and pictures.
READ_SUFFIXES = IMAGE_SUFFIXES + PICTURE_SUFFIXES


def is_picture(path: str | Path) -> bool:
    """True when ``path`` names a 2D picture (PNG, JPEG, BMP, TIFF) by its suffix."""
    return str(path).lower().endswith(PICTURE_SUFFIXES)


def mask_name_for(picture: str | Path) -> str:
    """The file name of the mask written for ``picture``: its own name, as PNG when its format is lossy."""
    path = Path(picture)
    return path.name if path.name.lower().endswith(MASK_PICTURE_SUFFIXES) else path.stem + ".png"


def case_name(path: Path) -> str:
    """A file's name without its image suffix (``a.nii.gz`` and ``a.seg.nrrd`` -> ``a``)."""
    name = path.name
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def check_output_path(path: Path, *, inputs: Sequence[str | Path] = ()) -> None:
    """Fail early, before any computation, when ``path`` cannot be written or would replace an input.

    The folder is tested by creating (and removing) a file in it: permission bits do not tell
    (an administrator, a read-only mount, a full quota).

    Raises:
        OutputError: Unsupported suffix, missing or unwritable folder, or ``path`` is one of
            ``inputs`` (the same file by path, link or hard link).
    """
    name = path.name.lower()
    if not name.endswith(OUTPUT_SUFFIXES):
        raise OutputError(f"Cannot write '{path}': unsupported file type. Use one of {', '.join(OUTPUT_SUFFIXES)}.")
    if not path.parent.is_dir():
        raise OutputError(f"Cannot write '{path}': the folder '{path.parent}' does not exist. Create it first.")
    for source in inputs:  # the same path, through a link, or a hard link of it
        if Path(source).resolve() == path.resolve() or (path.exists() and os.path.samefile(source, path)):
            raise OutputError(
                f"--out '{path}' is the input image '{source}': the label map would replace your image. "
                "Choose another output file."
            )
    try:
        handle, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".check", dir=path.parent)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise OutputError(
            f"Cannot write '{path}': the folder '{path.parent}' is not writable ({error.strerror}). "
            "Choose a folder you can write to."
        ) from error
