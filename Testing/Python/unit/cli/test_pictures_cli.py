"""The 2D path as a new user takes it: a folder of RGB JPEGs and 0/255 PNG masks -> ``samtune manifest`` ->
``samtune train`` (a dry run: tiny random model, real files) -> ``samtune predict`` on a folder; and what
``train`` prints in its quiet, normal and ``--events`` modes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samtune.cli import main
from samtune.data import write_picture_cases

SETTINGS = ["--set", "epochs=2", "--set", "batch_size=2", "--set", "val_fraction=0.34", "--set", "patience=0",
            "--set", "min_steps=0", "--set", "device=\"cpu\"", "--dry-run"]  # fmt: skip


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pictures")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    write_picture_cases(root / "images", root / "masks", n=6, size=(56, 77))  # 0/255 masks, one empty
    picture = np.asarray(Image.open(root / "images" / "lesion0.jpg"))
    Image.fromarray(picture[..., 0]).save(root / "images" / "grey.png")  # a grey picture among RGB ones
    Image.fromarray(np.asarray(Image.open(root / "masks" / "lesion0_mask.png"))).save(root / "masks" / "grey.png")
    assert main(["manifest", "--images", str(root / "images"), "--labels", str(root / "masks"),
                 "--out", str(root / "manifest.json")]) == 0  # fmt: skip
    return root


@pytest.fixture(scope="module")
def trained(dataset: Path) -> Path:
    out = dataset / "model"
    assert main(["train", "--preset", "cpu_quick", "--train-manifest", str(dataset / "manifest.json"),
                 "--out", str(out), "--quiet", *SETTINGS]) == 0  # fmt: skip
    return out


def test_quiet_training_prints_no_epoch_line_and_ends_with_the_summary(dataset: Path, capsys):
    out = dataset / "quiet-model"
    assert main(["train", "--preset", "cpu_quick", "--train-manifest", str(dataset / "manifest.json"),
                 "--out", str(out), "--quiet", *SETTINGS]) == 0  # fmt: skip
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"Wrote model {out}: best epoch ") and "validation Dice 0." in lines[0]
    assert "{" not in captured.err  # never a raw Python dict


def test_normal_training_says_each_epoch_in_words_and_events_keep_stdout_json(dataset: Path, capsys):
    common = ["train", "--preset", "cpu_quick", "--train-manifest", str(dataset / "manifest.json"), *SETTINGS]
    assert main([*common, "--out", str(dataset / "loud-model")]) == 0
    err = capsys.readouterr().err
    epochs = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/2", "2/2"] and all("validation Dice" in e for e in epochs)
    assert "{" not in err and "Wrote model" in err.splitlines()[-1]
    assert main([*common, "--out", str(dataset / "events-model"), "--events"]) == 0
    captured = capsys.readouterr()
    events = [json.loads(line) for line in captured.out.splitlines()]
    assert [e["event"] for e in events if e["event"] == "metrics"] == ["metrics", "metrics"]
    assert events[-1]["event"] == "finished"
    assert captured.err.strip().splitlines()[-1].startswith("Wrote model")


def test_predict_on_a_folder_writes_one_mask_per_picture_at_its_size(dataset: Path, trained: Path, capsys):
    out = dataset / "predicted"
    assert main(["predict", "--image", str(dataset / "images"), "--out", str(out), "--model", str(trained),
                 "--quiet"]) == 0  # fmt: skip
    written = sorted(p.name for p in out.iterdir())
    assert written == ["grey.png"] + [f"lesion{n}.png" for n in range(6)]  # JPEG pictures get PNG masks
    for name in written:
        mask = np.asarray(Image.open(out / name))
        assert mask.shape == (56, 77) and set(np.unique(mask)) <= {0, 255}
    assert "Wrote 7 masks to" in capsys.readouterr().err
    assert main(["evaluate", "--pred", str(out), "--ref", str(dataset / "masks")]) == 0  # 'lesion0_mask' <-> 'lesion0'
    table = capsys.readouterr().out
    assert all(f"lesion{n} " in table for n in (0, 1, 2, 4, 5)) and "grey " in table  # lesion3: an empty mask


def test_a_folder_of_pictures_is_refused_with_prompts_or_as_its_own_output(dataset: Path, trained: Path, capsys):
    images = str(dataset / "images")
    assert main(["predict", "--image", images, "--out", images, "--model", str(trained)]) == 6
    assert "the masks would replace the pictures" in capsys.readouterr().err
    code = main(["predict", "--image", images, "--out", str(dataset / "p2"), "--box", "1", "1", "0", "9", "9", "0"])
    assert code == 2 and "prompts (--box, --point) belong to one picture" in capsys.readouterr().err


def test_a_model_path_that_is_not_a_model_folder_says_so(dataset: Path, capsys):
    code = main(["predict", "--image", str(dataset / "images"), "--out", str(dataset / "p3"),
                 "--model", str(dataset / "no-such-model")])  # fmt: skip
    assert code == 2 and "is not a model folder (no such folder)" in capsys.readouterr().err
    assert not (dataset / "p3").exists()  # nothing made before the model was found
