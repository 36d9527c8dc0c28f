"""2D pictures (PNG, JPEG, BMP, TIFF) as single-slice volumes and mask pictures as label values;
one-slice label maps written as grey pictures. Used by :mod:`samtune.data.image_io`."""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from samtune.data.volume import Volume
from samtune.errors import LabelError, OutputError, UnsupportedImageError

logger = logging.getLogger(__name__)


def open_picture(path: Path) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        picture = Image.open(path)
        picture.load()
    except (OSError, UnidentifiedImageError) as error:
        raise UnsupportedImageError(f"Cannot read picture '{path}': {error}. Check that the file is intact.") from error
    frames = int(getattr(picture, "n_frames", 1))
    if frames > 1:
        picture.close()
        raise UnsupportedImageError(
            f"'{path}' holds {frames} pages (a stack); SAMTune reads single pictures. Save one picture per file, "
            "or save the stack as a volume (NIfTI, NRRD)."
        )
    return picture


def read_picture(path: Path) -> Volume:
    with open_picture(path) as picture:
        mode = picture.mode
        if mode in ("RGBA", "P", "PA", "LA", "CMYK", "YCbCr", "LAB", "HSV"):
            array = np.asarray(picture.convert("RGB"))
        elif mode.startswith("I;16"):  # 16-bit grey, any byte order
            array = np.asarray(picture).astype(np.uint16)
        elif mode not in ("L", "RGB", "I", "F"):
            array = np.asarray(picture.convert("L"))
        else:
            array = np.asarray(picture)
    return Volume.from_2d(array)


def read_picture_label(path: Path) -> Volume:
    """A mask picture as label values: 1-bit -> 0/1, palette -> its indices, grey as stored, a colour
    picture whose three channels agree -> its grey; a lossy JPEG mask is thresholded at half its range.

    Raises:
        LabelError: A colour mask whose channels differ (several colours cannot be told apart as values).
    """
    with open_picture(path) as picture:
        mode = picture.mode
        if mode == "1":
            array = np.asarray(picture, dtype=np.uint8)
        elif mode in ("P", "L", "I", "F") or mode.startswith("I;16"):
            array = np.asarray(picture)
        else:
            rgb = np.asarray(picture.convert("RGB"))
            if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
                colours = len(np.unique(rgb.reshape(-1, 3), axis=0))
                raise LabelError(
                    f"Mask '{path}' is a colour picture with {colours} colours; a mask holds one value per pixel. "
                    "Save masks as grey (0/255 or 0/1) or palette pictures."
                )
            array = rgb[..., 0]
    if path.name.lower().endswith((".jpg", ".jpeg")) and array.size and len(np.unique(array)) > 2:
        top = int(array.max())
        logger.warning(
            "Mask '%s' is a JPEG, whose compression blurs values (%d different ones): thresholded at %d into 0/%d. "
            "Save masks as PNG to keep them exact.", path, len(np.unique(array)), (top + 1) // 2, top,
        )  # fmt: skip
        array = np.where(array >= (top + 1) // 2, top, 0).astype(np.uint8)
    return Volume.from_2d(array)


def mask_picture_writer(array: np.ndarray, path: Path, suffix: str) -> Callable[[str], None]:
    """A writer of a one-slice label array as a grey picture (8-bit, or 16-bit PNG/TIFF), read back to check."""
    from PIL import Image

    if array.shape[0] != 1:
        raise OutputError(
            f"Cannot write '{path}': a {suffix} picture holds one slice and this label map has {array.shape[0]}. "
            "Write volumes as .nii.gz, .nrrd, .seg.nrrd or .mha."
        )
    top = int(array.max()) if array.size else 0
    if top > 255 and suffix == ".bmp":
        raise OutputError(f"Cannot write '{path}': BMP holds values up to 255, the labels go to {top}. Use PNG.")
    pixels = np.ascontiguousarray(array[0].astype(np.uint8 if top <= 255 else np.uint16))
    kind = {".png": "PNG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}[suffix]

    def write(temporary: str) -> None:
        Image.fromarray(pixels).save(temporary, format=kind)
        with Image.open(temporary) as back:
            if not np.array_equal(np.asarray(back).astype(pixels.dtype), pixels):
                raise OSError(errno.EIO, "the picture written reads back with other pixels (a partial write)")

    return write
