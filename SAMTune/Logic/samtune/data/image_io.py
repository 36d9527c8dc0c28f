"""Reading and writing images and label maps (NIfTI, NRRD, ``.seg.nrrd``, MHA, DICOM, PNG/JPEG/BMP/TIFF).

Every write is atomic: the file is written next to its destination under a temporary name and
renamed into place, so a failed or interrupted write never leaves a half file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from samtune.atomic import as_if_created
from samtune.data.formats import IMAGE_SUFFIXES, MASK_PICTURE_SUFFIXES, PICTURE_SUFFIXES, WRITE_SUFFIXES, is_picture
from samtune.data.pictures import mask_picture_writer, read_picture, read_picture_label
from samtune.data.volume import Geometry, Volume, require_integer_labels
from samtune.errors import DataError, LabelError, OutputError, UnsupportedImageError

logger = logging.getLogger(__name__)

#: ``Volume.metadata`` key holding ``{segment name: label value}`` as JSON.
SEGMENT_NAMES_KEY = "segment_names"


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in sorted(IMAGE_SUFFIXES + PICTURE_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def _from_sitk(image: sitk.Image, source: str) -> Volume:
    dimension = image.GetDimension()
    array = sitk.GetArrayFromImage(image)
    if dimension == 2:
        spacing = tuple(image.GetSpacing()) + (1.0,)
        origin = tuple(image.GetOrigin()) + (0.0,)
        d = image.GetDirection()
        direction = (d[0], d[1], 0.0, d[2], d[3], 0.0, 0.0, 0.0, 1.0)
        array = array[None]
    elif dimension == 3:
        spacing, origin, direction = image.GetSpacing(), image.GetOrigin(), image.GetDirection()
    else:
        raise UnsupportedImageError(
            f"'{source}' is a {dimension}D image (size {image.GetSize()}); SAMTune reads 2D and 3D images. "
            "Split a time series into 3D frames first."
        )
    return Volume(array, Geometry(spacing=spacing, origin=origin, direction=direction))  # type: ignore[arg-type]


def _read_dicom_folder(folder: Path) -> Volume:
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise DataError(
            f"No readable DICOM series in folder '{folder}'. Point to the folder that holds the .dcm "
            "files of one series, or to a NIfTI/NRRD/MHA file."
        )
    if len(series) > 1:
        raise DataError(
            f"Folder '{folder}' holds {len(series)} DICOM series ({', '.join(series[:3])}...). "
            "Put each series in its own folder."
        )
    files = reader.GetGDCMSeriesFileNames(str(folder), series[0])
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    image = reader.Execute()
    _warn_uneven_slices(reader, len(files), folder)
    return _from_sitk(image, str(folder))


def _warn_uneven_slices(reader: sitk.ImageSeriesReader, count: int, folder: Path) -> None:
    """Say so when a series' slice positions are not evenly spaced (missing or doubled slices).

    ITK prints its own warning for this; SAMTune hides ITK's printouts unless ``-v`` and says it in
    words instead, naming the folder.
    """
    positions = []
    for n in range(count):
        if not reader.HasMetaDataKey(n, "0020|0032"):
            return
        with contextlib.suppress(ValueError):
            positions.append([float(v) for v in reader.GetMetaData(n, "0020|0032").split("\\")])
    if len(positions) < 3:
        return
    steps = np.linalg.norm(np.diff(np.asarray(positions), axis=0), axis=1)
    if steps.max() - steps.min() > 0.01 * max(float(np.median(steps)), 1e-6):
        logger.warning(
            "DICOM series in '%s' has uneven slice spacing (%.3g to %.3g mm between slices): slices may be missing "
            "or doubled, and the volume's geometry assumes even spacing. Check the series.",
            folder, float(steps.min()), float(steps.max()),
        )  # fmt: skip


def _read_segmentation_layers(image: sitk.Image, path: Path) -> tuple[np.ndarray, dict[str, int]]:
    """Label map and ``{name: value}`` from a Slicer ``.seg.nrrd`` (one or several layers)."""
    keys = set(image.GetMetaDataKeys())
    names: dict[str, int] = {}
    layers: dict[str, int] = {}
    n = 0
    while f"Segment{n}_ID" in keys:
        name = image.GetMetaData(f"Segment{n}_Name") if f"Segment{n}_Name" in keys else f"Segment_{n + 1}"
        value = int(image.GetMetaData(f"Segment{n}_LabelValue")) if f"Segment{n}_LabelValue" in keys else n + 1
        layer = int(image.GetMetaData(f"Segment{n}_Layer")) if f"Segment{n}_Layer" in keys else 0
        names[name] = value
        layers[name] = layer
        n += 1
    array = sitk.GetArrayFromImage(image)
    if image.GetNumberOfComponentsPerPixel() == 1 or array.ndim == 3:
        return array, names
    # Several layers: merge them into one label map with distinct values.
    merged = np.zeros(array.shape[:3], dtype=np.int64)
    relabelled: dict[str, int] = {}
    for index, (name, value) in enumerate(names.items(), start=1):
        mask = array[..., layers[name]] == value
        if np.any(merged[mask]):
            raise LabelError(
                f"Segments in '{path}' overlap (e.g. '{name}'); a label map cannot hold overlapping "
                "segments. Export the overlapping segments to separate files."
            )
        merged[mask] = index
        relabelled[name] = index
    return merged, relabelled


def read_volume(path: str | Path) -> Volume:
    """Read an image: NIfTI, NRRD, ``.seg.nrrd``, MHA/MHD, a DICOM series folder or PNG/JPEG/BMP/TIFF.

    Returns:
        A :class:`Volume`; 2D images become single-slice volumes ``(1, H, W[, 3])``.

    Raises:
        DataError: The path does not exist, or a folder holds no readable series.
        UnsupportedImageError: Unknown format or a 4D image.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        return _read_dicom_folder(path)
    if not path.is_file():
        raise DataError(f"Image '{path}' does not exist. Check the path.")
    suffix = _suffix(path)
    if suffix in PICTURE_SUFFIXES:
        return read_picture(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise UnsupportedImageError(
            f"Cannot read '{path}' as an image ({str(error).strip().splitlines()[-1][:200]}). Supported: "
            f"{', '.join(IMAGE_SUFFIXES + PICTURE_SUFFIXES)} and DICOM series folders."
        ) from error
    if suffix == ".seg.nrrd" and image.GetDimension() == 3:
        array, names = _read_segmentation_layers(image, path)
        geometry = Geometry(
            spacing=image.GetSpacing(),  # type: ignore[arg-type]
            origin=image.GetOrigin(),  # type: ignore[arg-type]
            direction=image.GetDirection(),
        )
        return Volume(array, geometry, {SEGMENT_NAMES_KEY: json.dumps(names)})
    return _from_sitk(image, str(path))


def segment_names(volume: Volume) -> dict[str, int]:
    """``{segment name: label value}`` stored with a volume read from a ``.seg.nrrd`` (else empty)."""
    text = volume.metadata.get(SEGMENT_NAMES_KEY)
    return {str(k): int(v) for k, v in json.loads(text).items()} if text else {}


def read_label(path: str | Path, *, reference: Volume | None = None) -> Volume:
    """Read a label map (integer values, 0 = background) and check it against ``reference``.

    Mask pictures (PNG, BMP, TIFF, JPEG) may be 1-bit, grey, palette or grey saved as RGB; see
    :func:`samtune.data.pictures.read_picture_label`.

    Raises:
        LabelError: Non-integer or negative values.
        GeometryMismatchError: Grid or geometry differs from ``reference``.
    """
    path = Path(path).expanduser()
    volume = read_picture_label(path) if is_picture(path) and path.is_file() else read_volume(path)
    if volume.is_vector:
        raise LabelError(f"'{path}' is a colour image, not a label map (expected one integer per voxel).")
    labels = require_integer_labels(volume.array, source=f"label map '{path}'")
    volume = Volume(labels, volume.geometry, dict(volume.metadata))
    if reference is not None:
        reference.check_same_grid(volume, what=f"label map '{Path(path).name}'")
    return volume


def _check_output(path: Path, allowed: tuple[str, ...]) -> str:
    suffix = _suffix(path)
    if suffix not in allowed:
        raise OutputError(f"Cannot write '{path}': unsupported file type. Use one of {', '.join(allowed)}.")
    if not path.parent.is_dir():
        raise OutputError(f"Cannot write '{path}': the folder '{path.parent}' does not exist. Create it first.")
    return suffix


def _to_sitk(volume: Volume, array: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(array, isVector=array.ndim == 4)
    image.SetSpacing(volume.geometry.spacing)
    image.SetOrigin(volume.geometry.origin)
    image.SetDirection(volume.geometry.direction)
    return image


#: ``errno`` values that mean "no room": a full disk, an exhausted quota, a file-size limit.
_NO_SPACE = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _verify_written(image: sitk.Image, temporary: str) -> None:
    """Read the written file back: some ITK writers (NIfTI) report no error when the disk fills
    and leave a truncated file, so success is what reads back with the same size and voxels."""
    try:
        back = sitk.ReadImage(temporary)
    except RuntimeError as error:
        raise OSError(errno.EIO, f"the file written cannot be read back ({str(error).strip()[:120]})") from error
    written, wanted = sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(image)
    if written.shape != wanted.shape:
        raise OSError(errno.EIO, "the file written reads back with another size (a partial write)")
    if np.issubdtype(wanted.dtype, np.floating):  # ITK's NIfTI writer stores NaN as 0: only numbers must match
        known = ~np.isnan(wanted)
        same = bool(np.array_equal(written[known], wanted[known]))
    else:
        same = bool(np.array_equal(written, wanted))
    if not same:
        raise OSError(errno.EIO, "the file written reads back with other voxels (a partial write)")


def _fsync(path: str | Path, *, directory: bool = False) -> None:
    # Windows flushes a file only through a handle that may write (FlushFileBuffers)
    flags = (os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)) if directory else os.O_RDWR
    try:
        handle = os.open(path, flags)
    except OSError:
        if directory:  # some platforms cannot open folders; the rename is still atomic there
            return
        raise
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _disk_full(path: Path) -> bool:
    try:
        return shutil.disk_usage(path.parent).free < (1 << 20)
    except OSError:
        return False


def _atomic_write(path: Path, suffix: str, write: Callable[[str], None]) -> None:
    """Write through a temporary sibling (``write(temporary)`` writes and checks it), flush it to disk,
    then rename it over ``path``.

    Raises:
        OutputError: The write failed or was incomplete (disk full, quota, file-size limit, I/O
            error); the temporary file is removed and ``path`` is left as it was.
    """
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    try:
        write(temporary)
        _fsync(temporary)
        as_if_created(temporary)
        os.replace(temporary, path)
        with contextlib.suppress(OSError):  # written and renamed already; some file systems refuse folder fsync
            _fsync(path.parent, directory=True)
    except (RuntimeError, OSError) as error:
        Path(temporary).unlink(missing_ok=True)
        full = isinstance(error, OSError) and error.errno in _NO_SPACE or _disk_full(path)
        cause = "the disk is full (or a quota or file-size limit was reached)" if full else str(error).strip()[:300]
        raise OutputError(
            f"Could not write '{path}': {cause}. Nothing was written; "
            + ("free some space or choose another folder, then run again." if full else "check the folder and retry.")
        ) from error
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _write_sitk(image: sitk.Image) -> Callable[[str], None]:
    def write(temporary: str) -> None:
        sitk.WriteImage(image, temporary, useCompression=True)
        _verify_written(image, temporary)

    return write


def write_volume(volume: Volume, path: str | Path) -> Path:
    """Write an image with its geometry (atomic). Returns the path written."""
    path = Path(path).expanduser()
    suffix = _check_output(path, WRITE_SUFFIXES)
    _atomic_write(path, suffix, _write_sitk(_to_sitk(volume, volume.array)))
    return path


def _segmentation_metadata(image: sitk.Image, names: dict[str, int], array: np.ndarray) -> None:
    palette = [(0.95, 0.3, 0.3), (0.3, 0.8, 0.4), (0.3, 0.5, 0.95), (0.95, 0.8, 0.25), (0.7, 0.4, 0.9)]
    image.SetMetaData("Segmentation_MasterRepresentation", "Binary labelmap")
    image.SetMetaData("Segmentation_ContainedRepresentationNames", "Binary labelmap|")
    image.SetMetaData("Segmentation_ReferenceImageExtentOffset", "0 0 0")
    for n, (name, value) in enumerate(names.items()):
        found = np.argwhere(array == value)
        if len(found):
            low, high = found.min(axis=0)[::-1], found.max(axis=0)[::-1]  # (i, j, k)
            extent = " ".join(f"{a} {b}" for a, b in zip(low, high))
        else:
            extent = "0 -1 0 -1 0 -1"
        color = palette[n % len(palette)]
        image.SetMetaData(f"Segment{n}_ID", f"Segment_{n + 1}")
        image.SetMetaData(f"Segment{n}_Name", name)
        image.SetMetaData(f"Segment{n}_NameAutoGenerated", "0")
        image.SetMetaData(f"Segment{n}_Color", " ".join(f"{c:.4f}" for c in color))
        image.SetMetaData(f"Segment{n}_ColorAutoGenerated", "0")
        image.SetMetaData(f"Segment{n}_LabelValue", str(value))
        image.SetMetaData(f"Segment{n}_Layer", "0")
        image.SetMetaData(f"Segment{n}_Extent", extent)
        image.SetMetaData(f"Segment{n}_Tags", "Segmentation.Status:inprogress|")


def write_label(volume: Volume, path: str | Path, *, segment_names: dict[str, int] | None = None) -> Path:
    """Write a label map with its geometry (atomic); ``.seg.nrrd`` gets Slicer segment metadata.

    Args:
        volume: Integer label volume.
        path: ``.nii``, ``.nii.gz``, ``.nrrd``, ``.seg.nrrd`` or ``.mha``; its folder must exist. A
            single-slice label map may also be a ``.png``, ``.bmp`` or ``.tif`` grey picture.
        segment_names: ``{name: value}`` for ``.seg.nrrd`` (default: ``Segment_N`` per value present).

    Raises:
        OutputError: Unsupported suffix, missing folder or a failed write (nothing is left behind).
        LabelError: Non-integer labels.
    """
    path = Path(path).expanduser()
    suffix = _check_output(path, WRITE_SUFFIXES + MASK_PICTURE_SUFFIXES)
    labels = require_integer_labels(volume.array, source="label map to write")
    if suffix in MASK_PICTURE_SUFFIXES:
        _atomic_write(path, suffix, mask_picture_writer(labels, path, suffix))
        return path
    top = int(labels.max()) if labels.size else 0
    dtype = np.uint8 if top < 256 else (np.uint16 if top < 65536 else np.int32)
    array = labels.astype(dtype)
    image = _to_sitk(volume, array)
    if suffix == ".seg.nrrd":
        names = segment_names or {f"Segment_{v}": int(v) for v in np.unique(array) if v != 0}
        _segmentation_metadata(image, names, array)
    _atomic_write(path, suffix, _write_sitk(image))
    return path
