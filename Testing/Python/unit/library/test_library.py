"""The model library: listing with cards, rename, delete, zip export/import and what import refuses."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from samtune.errors import OutputError, WeightsError
from samtune.library import ModelLibrary, check_model_name, default_models_dir
from samtune.library.model_folder import save_trained_model
from samtune.models import build_tiny_model
from samtune.peft.apply import FineTuneConfig, apply_finetuning


def _model(folder: Path, name: str, dice: float = 0.8) -> Path:
    model = build_tiny_model("sam_vit_b", seed=0)
    apply_finetuning(model, FineTuneConfig())
    return save_trained_model(
        folder / name, model, train_config={"finetune": {"method": "lora"}}, structure="left atrium",
        data_summary={"cases": 2, "train_slices": 12}, metrics={"val_dice": dice}, extra={"tiny": True},
    )  # fmt: skip


@pytest.fixture
def library(tmp_path: Path) -> ModelLibrary:
    library = ModelLibrary(tmp_path / "models")
    library.root.mkdir()
    _model(library.root, "atrium")
    return library


def test_models_are_listed_with_their_cards(library: ModelLibrary):
    (library.root / "broken").mkdir()
    (library.root / "broken" / "model_card.json").write_text("{oops", encoding="utf-8")
    [entry] = library.models()
    assert entry.name == "atrium" and entry.backbone == "sam_vit_b"
    assert entry.structures == ["left atrium"] and entry.validation_dice == pytest.approx(0.8)
    assert "2 case(s), 12 training slice(s); validation Dice 0.800" in entry.summary()
    assert len(library.problems()) == 1 and library.problems()[0].startswith("broken: ")


def test_rename_delete_and_names(library: ModelLibrary):
    renamed = library.rename("atrium", "LA (LGE) v2")
    assert renamed.card["name"] == "LA (LGE) v2" and [m.name for m in library.models()] == ["LA (LGE) v2"]
    _model(library.root, "other")
    with pytest.raises(OutputError, match="already exists"):
        library.rename("other", "LA (LGE) v2")
    for bad in ("", "../escape", "a/b", "x" * 101, ".hidden"):
        with pytest.raises(OutputError, match="cannot be a model name"):
            check_model_name(bad)
    library.delete("other")
    with pytest.raises(WeightsError, match="No model 'other'"):
        library.get("other")


def test_export_then_import_round_trips(library: ModelLibrary, tmp_path: Path):
    archive = library.export_zip("atrium", tmp_path / "shared")
    assert archive.name == "shared.zip"
    assert sorted(zipfile.ZipFile(archive).namelist()) == ["model_card.json", "weights.safetensors"]
    other = ModelLibrary(tmp_path / "elsewhere")
    entry = other.import_model(archive)
    assert entry.name == "atrium"
    assert (entry.path / "weights.safetensors").read_bytes() == (
        library.root / "atrium" / "weights.safetensors"
    ).read_bytes()
    with pytest.raises(OutputError, match="already exists"):
        other.import_model(archive)
    assert other.import_model(library.root / "atrium", name="from folder").name == "from folder"
    assert not [p for p in other.root.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_import_refuses_anything_but_a_model(library: ModelLibrary, tmp_path: Path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.write(library.root / "atrium" / "model_card.json", "model_card.json")
        archive.writestr("../weights.safetensors", b"x")
    with pytest.raises(WeightsError, match="holds exactly"):
        library.import_model(evil)
    damaged = tmp_path / "damaged.zip"
    with zipfile.ZipFile(damaged, "w") as archive:
        archive.write(library.root / "atrium" / "model_card.json", "model_card.json")
        archive.writestr("weights.safetensors", b"\x80\x04pickle")
    with pytest.raises(WeightsError, match="damaged or not safetensors"):
        library.import_model(damaged, name="damaged")
    (tmp_path / "plain.txt").write_text("hi", encoding="utf-8")
    with pytest.raises(WeightsError, match="not a zip file"):
        library.import_model(tmp_path / "plain.txt")
    assert [m.name for m in library.models()] == ["atrium"]
    assert not [p for p in library.root.iterdir() if p.name.startswith(".")]


def test_default_folder_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("SAMTUNE_MODELS_DIR", str(tmp_path / "m"))
    assert default_models_dir() == tmp_path / "m"
    monkeypatch.delenv("SAMTUNE_MODELS_DIR")
    monkeypatch.setenv("SAMTUNE_HOME", str(tmp_path / "home"))
    assert default_models_dir() == tmp_path / "home" / "models"


def test_cache_and_data_folders_follow_the_platform_rule(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from samtune.models import weights_cache_dir

    for name in ("SAMTUNE_HOME", "SAMTUNE_MODELS_DIR", "SAMTUNE_WEIGHTS_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert weights_cache_dir() == tmp_path / "cache" / "samtune" / "weights"  # downloads: re-obtainable
    assert default_models_dir() == tmp_path / "data" / "samtune" / "models"  # trained models: the user's work
