"""Reading and writing every supported format keeps voxels and geometry; bad input is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from samtune.data import Volume, read_label, read_volume, segment_names, write_label, write_volume
from samtune.errors import (
    DataError,
    GeometryMismatchError,
    LabelError,
    OutputError,
    UnsupportedImageError,
)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_image_round_trip_keeps_voxels_and_geometry(oblique_volume: Volume, tmp_path: Path, suffix: str) -> None:
    path = write_volume(oblique_volume, tmp_path / f"image{suffix}")
    back = read_volume(path)
    np.testing.assert_array_equal(back.array, oblique_volume.array)
    assert back.geometry.is_close(oblique_volume.geometry)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".seg.nrrd", ".mha"])
def test_label_round_trip(oblique_label: Volume, oblique_volume: Volume, tmp_path: Path, suffix: str) -> None:
    path = write_label(oblique_label, tmp_path / f"label{suffix}", segment_names={"atrium": 1, "vessel": 2})
    back = read_label(path, reference=oblique_volume)
    np.testing.assert_array_equal(back.array, oblique_label.array)
    assert back.geometry.is_close(oblique_volume.geometry)
    if suffix == ".seg.nrrd":
        assert segment_names(back) == {"atrium": 1, "vessel": 2}
        header = sitk.ReadImage(str(path))
        assert header.GetMetaData("Segment0_Name") == "atrium"
        assert header.GetMetaData("Segment1_LabelValue") == "2"
        assert header.GetMetaData("Segment0_Extent") == "15 39 10 19 2 4"  # i, j, k bounds


def test_multi_layer_seg_nrrd_is_merged(tmp_path: Path) -> None:
    layers = np.zeros((4, 5, 6, 2), dtype=np.uint8)
    layers[1, 1:3, 1:3, 0] = 1
    layers[2, 2:4, 2:5, 1] = 1
    image = sitk.GetImageFromArray(layers, isVector=True)
    for n, (name, layer) in enumerate((("liver", 0), ("tumour", 1))):
        image.SetMetaData(f"Segment{n}_ID", f"S{n}")
        image.SetMetaData(f"Segment{n}_Name", name)
        image.SetMetaData(f"Segment{n}_LabelValue", "1")
        image.SetMetaData(f"Segment{n}_Layer", str(layer))
    path = tmp_path / "layers.seg.nrrd"
    sitk.WriteImage(image, str(path))
    volume = read_label(path)
    assert segment_names(volume) == {"liver": 1, "tumour": 2}
    assert volume.array[1, 1, 1] == 1 and volume.array[2, 3, 4] == 2
    assert int((volume.array == 2).sum()) == 6


def test_png_grey_and_rgb_become_single_slice_volumes(tmp_path: Path) -> None:
    grey = (np.arange(20 * 30) % 256).reshape(20, 30).astype(np.uint8)
    rgb = np.stack([grey, 255 - grey, grey // 2], axis=-1)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    Image.fromarray(rgb).save(tmp_path / "rgb.bmp")
    g = read_volume(tmp_path / "grey.png")
    c = read_volume(tmp_path / "rgb.bmp")
    assert g.shape == (1, 20, 30) and not g.is_vector
    np.testing.assert_array_equal(g.array[0], grey)
    assert c.shape == (1, 20, 30) and c.is_vector
    np.testing.assert_array_equal(c.array[0], rgb)


def _write_dicom_series(volume: np.ndarray, folder: Path, spacing: tuple[float, float, float]) -> None:
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(volume.shape[0]):
        image = sitk.GetImageFromArray(volume[k].astype(np.int16))
        image.SetSpacing(spacing[:2])
        tags = {
            "0008|0060": "MR",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|000e": "1.2.826.0.1.3680043.2.1125.2",
            "0020|0032": f"5\\-7\\{k * spacing[2]}",
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0020|0013": str(k + 1),
            "0028|0030": f"{spacing[1]}\\{spacing[0]}",
            "0008|0018": f"1.2.826.0.1.3680043.2.1125.3.{k + 1}",
        }
        for tag, value in tags.items():
            image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(image)


def test_dicom_series_folder_is_read_with_its_geometry(tmp_path: Path) -> None:
    array = np.random.default_rng(1).integers(0, 1000, size=(5, 12, 16))
    _write_dicom_series(array, tmp_path, (0.8, 0.8, 3.0))
    volume = read_volume(tmp_path)
    np.testing.assert_array_equal(volume.array, array)
    np.testing.assert_allclose(volume.spacing, (0.8, 0.8, 3.0), atol=1e-4)
    np.testing.assert_allclose(volume.geometry.origin, (5.0, -7.0, 0.0), atol=1e-4)


def test_folder_without_series_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="No readable DICOM series in folder"):
        read_volume(tmp_path)


def test_missing_file_and_4d_image(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_volume(tmp_path / "absent.nii.gz")
    four_d = sitk.GetImageFromArray(np.zeros((2, 3, 4, 5), dtype=np.float32), isVector=False)
    sitk.WriteImage(four_d, str(tmp_path / "series.nrrd"))
    with pytest.raises(UnsupportedImageError, match="4D image"):
        read_volume(tmp_path / "series.nrrd")
    with pytest.raises(UnsupportedImageError, match="3D array"):
        Volume(np.zeros((2, 3, 4, 5, 6)))


def test_label_checks(oblique_volume: Volume, tmp_path: Path) -> None:
    smaller = Volume(np.zeros((7, 33, 49), dtype=np.uint8), oblique_volume.geometry)
    write_label(smaller, tmp_path / "small.nii.gz")
    with pytest.raises(GeometryMismatchError, match="grid size"):
        read_label(tmp_path / "small.nii.gz", reference=oblique_volume)
    moved = Volume.from_array(np.zeros(oblique_volume.shape, dtype=np.uint8), spacing=(0.7, 0.9, 2.5))
    write_label(moved, tmp_path / "moved.nii.gz")
    with pytest.raises(GeometryMismatchError, match="different geometry"):
        read_label(tmp_path / "moved.nii.gz", reference=oblique_volume)
    write_volume(oblique_volume, tmp_path / "float.nii.gz")
    with pytest.raises(LabelError, match="non-integer values.*image instead of the label"):
        read_label(tmp_path / "float.nii.gz")


def test_writing_into_a_missing_folder_leaves_nothing(oblique_label: Volume, tmp_path: Path) -> None:
    target = tmp_path / "missing" / "label.nii.gz"
    with pytest.raises(OutputError, match="does not exist. Create it first"):
        write_label(oblique_label, target)
    assert not target.parent.exists()
    with pytest.raises(OutputError, match="unsupported file type"):
        write_label(oblique_label, tmp_path / "label.jpg")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_partial_file(
    oblique_volume: Volume, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    existing = write_volume(oblique_volume, tmp_path / "image.nrrd")
    before = existing.read_bytes()

    def write_half_then_fail(image: sitk.Image, name: str, *args: object, **kwargs: object) -> None:
        Path(name).write_bytes(b"NRRD0004\n half a header")  # like a disk that fills up mid-write
        raise RuntimeError("No space left on device")

    monkeypatch.setattr(sitk, "WriteImage", write_half_then_fail)
    with pytest.raises(OutputError, match="No space left on device"):
        write_volume(oblique_volume, existing)
    assert existing.read_bytes() == before  # the good file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["image.nrrd"]  # no temporary left behind
