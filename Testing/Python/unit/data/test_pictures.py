"""2D pictures as a user has them: RGB JPEGs, grey and 16-bit TIFFs, masks as 1-bit BMP, 0/255 PNG,
palette or grey-as-RGB pictures, paired into a manifest and written back as mask pictures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samtune.cli import main
from samtune.data import Volume, make_picture_phantom, read_label, read_volume, write_label, write_picture_cases
from samtune.errors import DataError, LabelError, OutputError
from samtune.train.manifest import build_manifest, cases_from_manifest, validate_manifest


def _folders(tmp_path: Path) -> tuple[Path, Path]:
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    return images, masks


def test_mask_pictures_read_as_label_values_in_every_common_encoding(tmp_path: Path):
    mask = np.zeros((20, 30), dtype=bool)
    mask[5:12, 8:20] = True
    Image.fromarray(mask).convert("1").save(tmp_path / "one_bit.bmp")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "grey.png")
    Image.fromarray(np.repeat((mask.astype(np.uint8) * 255)[..., None], 3, axis=2)).save(tmp_path / "rgb.png")
    palette = Image.fromarray(mask.astype(np.uint8), mode="P")
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.save(tmp_path / "palette.png")
    Image.fromarray(mask.astype(np.uint16) * 1000).save(tmp_path / "sixteen.tif")
    expected = {"one_bit.bmp": 1, "grey.png": 255, "rgb.png": 255, "palette.png": 1, "sixteen.tif": 1000}
    for name, value in expected.items():
        label = read_label(tmp_path / name)
        assert label.shape == (1, 20, 30), name
        assert set(np.unique(label.array)) == {0, value}, name
        assert np.array_equal(label.array[0] != 0, mask), name


def test_a_lossy_jpeg_mask_is_thresholded_and_a_colour_mask_is_refused(tmp_path: Path, caplog):
    _, mask = make_picture_phantom(size=(64, 80), seed=1)
    Image.fromarray(mask).save(tmp_path / "m.jpg", quality=60)
    assert len(np.unique(np.asarray(Image.open(tmp_path / "m.jpg")))) > 2  # JPEG blurs the edge
    label = read_label(tmp_path / "m.jpg")
    assert set(np.unique(label.array)) <= {0, int(label.array.max())}
    assert np.mean((label.array[0] != 0) == (mask != 0)) > 0.98
    assert "JPEG" in caplog.text
    colours = np.zeros((10, 10, 3), dtype=np.uint8)
    colours[:5, :, 0] = 255
    colours[5:, :, 1] = 255
    Image.fromarray(colours).save(tmp_path / "colours.png")
    with pytest.raises(LabelError, match="colour picture with 2 colours"):
        read_label(tmp_path / "colours.png")


def test_rgb_grey_and_16_bit_pictures_become_single_slice_volumes(tmp_path: Path):
    picture, _ = make_picture_phantom(size=(560, 768), seed=2)
    Image.fromarray(picture).save(tmp_path / "rgb.jpg")
    Image.fromarray(picture[..., 0]).save(tmp_path / "grey.png")
    Image.fromarray(picture[..., 0].astype(np.uint16) * 200).save(tmp_path / "grey16.tif")
    rgb, grey, deep = (read_volume(tmp_path / n) for n in ("rgb.jpg", "grey.png", "grey16.tif"))
    assert rgb.array.shape == (1, 560, 768, 3) and rgb.is_vector
    assert grey.array.shape == (1, 560, 768) and not grey.is_vector
    assert deep.array.dtype == np.uint16 and int(deep.array.max()) > 255
    frames = [Image.fromarray(picture[..., c]) for c in range(3)]
    frames[0].save(tmp_path / "stack.tif", save_all=True, append_images=frames[1:])
    with pytest.raises(Exception, match="3 pages"):
        read_volume(tmp_path / "stack.tif")


def test_a_manifest_from_picture_folders_pairs_by_name_and_takes_each_masks_value(tmp_path: Path):
    images, masks = _folders(tmp_path)
    names = write_picture_cases(images, masks, n=4, size=(48, 64))  # RGB JPEGs, 0/255 PNG masks "_mask"
    Image.fromarray(np.asarray(Image.open(images / "lesion0.jpg"))[..., 0]).save(images / "grey.png")
    bit = np.zeros((48, 64), dtype=bool)
    bit[10:30, 10:30] = True
    Image.fromarray(bit).convert("1").save(masks / "grey.bmp")  # 1-bit BMP beside 0/255 PNGs
    manifest = build_manifest(images, masks)
    by_id = {case["id"]: case for case in manifest["cases"]}
    assert set(by_id) == {*names, "grey"}
    assert by_id["lesion0"]["structures"] == {"structure": 255}
    assert by_id["grey"]["structures"] == {"structure": 1}
    assert by_id["lesion3"]["label"].endswith("lesion3_mask.png")  # the picture without a lesion: an empty mask
    out = tmp_path / "manifest.json"
    assert main(["manifest", "--images", str(images), "--labels", str(masks), "--out", str(out)]) == 0
    assert validate_manifest(out) == []  # an empty mask is a negative example, not a problem
    cases = {c.case_id: c for c in cases_from_manifest(out)}
    assert cases["lesion0"].image.is_vector and not cases["grey"].image.is_vector
    assert cases["lesion0"].value == 255 and cases["grey"].value == 1


def test_a_mask_with_several_values_needs_structure_names(tmp_path: Path, capsys):
    images, masks = _folders(tmp_path)
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(images / "a.png")
    two = np.zeros((16, 16), dtype=np.uint8)
    two[2:6], two[8:12] = 1, 2
    Image.fromarray(two).save(masks / "a.png")
    with pytest.raises(DataError, match=r"several values \(1, 2\).*--structure NAME=VALUE"):
        build_manifest(images, masks)
    manifest = build_manifest(images, masks, structures={"lesion": 1, "border": 2})
    assert manifest["cases"][0]["structures"] == {"lesion": 1, "border": 2}
    (tmp_path / "m.json").write_text(
        json.dumps({"cases": [{"id": "a", "image": "images/a.png", "label": "masks/a.png", "structures": {"x": 255}}]})
    )
    assert any("it holds 1, 2" in p for p in validate_manifest(tmp_path / "m.json"))


def test_single_slice_label_maps_write_as_pictures_and_volumes_do_not(tmp_path: Path):
    labels = np.zeros((1, 30, 40), dtype=np.uint8)
    labels[0, 3:9, 5:30] = 255
    picture = Volume.from_2d(labels[0])
    for suffix in (".png", ".bmp", ".tif"):
        path = write_label(picture, tmp_path / f"mask{suffix}")
        assert np.array_equal(np.asarray(Image.open(path)), labels[0]), suffix
    deep = Volume.from_2d(labels[0].astype(np.uint16) * 100)
    assert np.asarray(Image.open(write_label(deep, tmp_path / "deep.png"))).max() == 25500
    with pytest.raises(OutputError, match="BMP holds values up to 255"):
        write_label(deep, tmp_path / "deep.bmp")
    with pytest.raises(OutputError, match="holds one slice and this label map has 2"):
        write_label(Volume(np.zeros((2, 4, 4), dtype=np.uint8)), tmp_path / "two.png")
    assert not (tmp_path / "two.png").exists() and not list(tmp_path.glob(".*"))  # no half or temporary file


def test_a_768_by_560_rgb_picture_keeps_its_aspect_ratio_in_model_space_and_back(tmp_path: Path):
    import torch

    from samtune.data import prepare_slices

    picture, mask = make_picture_phantom(size=(560, 768), seed=4)
    Image.fromarray(picture).save(tmp_path / "wide.jpg", quality=95)
    volume = read_volume(tmp_path / "wide.jpg")
    images, grid = prepare_slices(volume, input_size=256, pixel_norm="minmax", config=None)
    assert images.shape == (1, 3, 256, 256)
    assert grid.resize.new_size == (187, 256)  # 560 / 768 * 256 = 186.7: the picture is not stretched
    assert torch.all(images[0, :, 187:, :] == 0) and images[0, :, :187, :].abs().sum() > 0  # padding below only
    in_model = grid.resize.pad(grid.resize.apply_mask(mask[None] > 0)[:, None].float())[:, 0]
    back = grid.resize.restore_mask(in_model > 0.5)[0]
    assert back.shape == (560, 768)
    assert np.mean(back == (mask > 0)) > 0.995  # the round trip loses only edge pixels


def test_a_picture_is_one_slice_whatever_its_pixel_spacing():
    from samtune.data import Geometry, default_slice_axis

    picture = Volume(np.zeros((1, 40, 60), dtype=np.uint8), Geometry(spacing=(2.0, 2.0, 1.0)))
    assert default_slice_axis(picture) == 0  # not the i or j axis, although they have the larger spacing
    sagittal = Volume(np.zeros((30, 40, 1), dtype=np.uint8), Geometry(spacing=(1.0, 0.5, 0.5)))
    assert default_slice_axis(sagittal) == 2
    stack = Volume(np.zeros((5, 40, 60), dtype=np.uint8), Geometry(spacing=(2.0, 2.0, 1.0)))
    assert default_slice_axis(stack) == 1  # a stack keeps the rule of the largest spacing
