"""`samtune evaluate` and `samtune manifest` on real files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from samtune.cli import main
from samtune.data import Volume, make_phantom, write_label, write_volume


def _pair(folder: Path, name: str, seed: int, *, shift: int = 0) -> tuple[Path, Path]:
    image, label = make_phantom(shape=(6, 48, 48), seed=seed, structures=2)
    (folder / "pred").mkdir(exist_ok=True)
    (folder / "ref").mkdir(exist_ok=True)
    reference = folder / "ref" / f"{name}.nii.gz"
    prediction = folder / "pred" / f"{name}.seg.nrrd"
    write_label(label, reference)
    write_label(Volume(np.roll(label.array, shift, axis=2), label.geometry), prediction)
    return prediction, reference


def test_evaluate_folders_prints_a_table_and_writes_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _pair(tmp_path, "case1", 1)
    _pair(tmp_path, "case2", 2, shift=2)
    out = tmp_path / "scores.csv"
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"),
                 "--structure", "inner=1", "--structure", "outer=2", "--csv", str(out)]) == 0  # fmt: skip
    table = capsys.readouterr().out
    assert "case1" in table and "mean" in table and "HD95" in table
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [(r["case"], r["structure"]) for r in rows] == [
        ("case1", "inner"), ("case1", "outer"), ("case2", "inner"), ("case2", "outer")
    ]  # fmt: skip
    perfect = rows[0]
    assert float(perfect["dice"]) == 1.0 and float(perfect["nsd"]) == 1.0 and float(perfect["hd95_mm"]) == 0.0
    shifted = rows[2]
    assert 0 < float(shifted["dice"]) < 1 and float(shifted["hd95_mm"]) > 0


def test_evaluate_lists_every_missing_prediction(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _pair(tmp_path, "case1", 1)
    _pair(tmp_path, "case2", 2)
    _pair(tmp_path, "case3", 3)
    for name in ("case2", "case3"):
        (tmp_path / "pred" / f"{name}.seg.nrrd").unlink()
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref")]) == 3
    err = capsys.readouterr().err
    assert "case2" in err and "case3" in err


def test_manifest_builds_from_folders_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for seed, label_name in ((0, "a.nii.gz"), (1, "b_label.nii.gz"), (2, "c-seg.nrrd")):
        image, label = make_phantom(shape=(6, 48, 48), seed=seed)
        write_volume(image, tmp_path / "images" / f"{label_name.split('.')[0].split('_')[0].split('-')[0]}.nii.gz")
        write_label(label, tmp_path / "labels" / label_name)
    out = tmp_path / "manifest.json"
    assert main(["manifest", "--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"),
                 "--out", str(out), "--structure", "atrium=1", "--fully-labelled"]) == 0  # fmt: skip
    cases = json.loads(out.read_text(encoding="utf-8"))["cases"]
    assert [c["id"] for c in cases] == ["a", "b", "c"]
    assert all(c["structures"] == {"atrium": 1} and c["fully_labelled"] for c in cases)
    assert main(["manifest", "--check", str(out)]) == 0


def test_manifest_check_reports_every_problem_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image, label = make_phantom(shape=(6, 48, 48), seed=0)
    write_volume(image, tmp_path / "a.nii.gz")
    write_label(label, tmp_path / "a-label.nii.gz")
    small, small_label = make_phantom(shape=(4, 40, 40), seed=1)
    write_volume(small, tmp_path / "b.nii.gz")
    write_label(label, tmp_path / "b-label.nii.gz")  # the wrong grid for image b
    manifest = {"cases": [
        {"id": "a", "image": "a.nii.gz", "label": "a-label.nii.gz", "structures": {"atrium": 1, "vessel": 7}},
        {"id": "b", "image": "b.nii.gz", "label": "b-label.nii.gz"},
        {"id": "c", "image": "c.nii.gz", "label": "c-label.nii.gz"},
    ]}  # fmt: skip
    (tmp_path / "m.json").write_text(json.dumps(manifest), encoding="utf-8")
    assert main(["manifest", "--check", str(tmp_path / "m.json")]) == 3
    err = capsys.readouterr().err
    assert "vessel" in err  # structure absent from a's label
    assert "case b" in err  # grid mismatch
    assert "c.nii.gz" in err and "c-label.nii.gz" in err  # both missing files of c


def test_label_file_for_finds_the_label_beside_an_image(tmp_path):
    from samtune.train.manifest import label_file_for

    for name in ("heart.nrrd", "heart.seg.nrrd", "lung.nii.gz", "lung_label.nii.gz", "alone.mha", "alone.nii.gz"):
        (tmp_path / name).write_bytes(b"")
    assert label_file_for(tmp_path / "heart.nrrd") == tmp_path / "heart.seg.nrrd"
    assert label_file_for(tmp_path / "lung.nii.gz") == tmp_path / "lung_label.nii.gz"
    assert label_file_for(tmp_path / "alone.mha") is None  # a same-named image in another format is no label
