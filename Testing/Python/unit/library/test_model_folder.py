"""A trained model folder (samtune.library.model_folder): save, card, load, and what loading refuses (tiny models)."""

from __future__ import annotations

import datetime
import json
import pickle
import platform
import struct
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

import samtune
from samtune.config_io import config_to_dict
from samtune.errors import OutputError, WeightsError
from samtune.library import read_model_card
from samtune.library.model_folder import load_trained_model, save_trained_model
from samtune.models import SamModel, build_tiny_model
from samtune.peft.apply import FineTuneConfig, apply_finetuning

FINETUNE = FineTuneConfig()
TRAINING = {"finetune": config_to_dict(FINETUNE), "epochs": 2, "lr": 0.01}


def _tiny(seed: int = 3) -> SamModel:
    """A tiny model with LoRA whose trainable weights are not their initial values (LoRA B starts at zero)."""
    model = build_tiny_model("sam_vit_b", seed=seed)
    apply_finetuning(model, FINETUNE)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
    return model


def _save(folder: Path, model: SamModel, **kwargs: Any) -> Path:
    arguments: dict[str, Any] = {
        "train_config": TRAINING,
        "structure": "left atrium",
        "data_summary": {"cases": 3, "train_slices": 12},
        "metrics": {"val_dice": 0.81},
        "extra": {"tiny": True, "tiny_seed": 3},
    }
    return save_trained_model(folder, model, **{**arguments, **kwargs})


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[SamModel, Path]:
    model = _tiny()
    return model, _save(tmp_path_factory.mktemp("models") / "atrium", model)


def test_a_saved_model_loads_back_with_every_weight_equal(saved: tuple[SamModel, Path]) -> None:
    model, folder = saved
    loaded, card = load_trained_model(folder)
    assert card == read_model_card(folder)
    assert not loaded.training  # ready to predict
    ours, theirs = dict(loaded.named_parameters()), dict(model.named_parameters())
    assert ours.keys() == theirs.keys()
    for name, value in theirs.items():  # trainable ones from the file, the frozen base rebuilt from its seed
        torch.testing.assert_close(ours[name], value, rtol=0, atol=0, msg=name)
        assert ours[name].requires_grad == value.requires_grad, name
    assert any(p.requires_grad and bool(p.abs().sum() > 0) for p in loaded.parameters())


def test_the_folder_holds_only_the_trainable_weights_as_safetensors_and_the_card(saved: tuple[SamModel, Path]) -> None:
    model, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == ["model_card.json", "weights.safetensors"]
    raw = (folder / "weights.safetensors").read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])  # safetensors: header length, then a JSON header, then raw tensors
    header = json.loads(raw[8 : 8 + length])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(header) - {"__metadata__"} == trainable
    assert not raw.startswith((b"\x80", b"PK"))  # neither a pickle nor a torch zip archive
    with safe_open(str(folder / "weights.safetensors"), framework="pt") as weights:
        assert set(weights.keys()) == trainable


def test_the_model_card_records_what_was_trained_and_how(saved: tuple[SamModel, Path]) -> None:
    model, folder = saved
    card = json.loads((folder / "model_card.json").read_text(encoding="utf-8"))
    assert card["format"] == "samtune-model" and card["card_version"] == 1
    assert card["name"] == "atrium" and card["backbone"] == "sam_vit_b" and card["structure"] == "left atrium"
    assert card["backbone_sha256"] is None  # a tiny model has no weights file to hash
    assert card["training"] == TRAINING
    assert card["data"] == {"cases": 3, "train_slices": 12} and card["metrics"] == {"val_dice": 0.81}
    assert card["trainable_parameters"] == sum(p.numel() for p in model.parameters() if p.requires_grad) > 0
    assert card["versions"] == {
        "samtune": samtune.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    created = datetime.datetime.fromisoformat(card["created"])
    assert created.utcoffset() == datetime.timedelta(0)
    assert abs(datetime.datetime.now(datetime.timezone.utc) - created) < datetime.timedelta(hours=1)
    assert card["tiny"] is True and card["tiny_seed"] == 3  # the extra fields


def test_loading_never_unpickles(saved: tuple[SamModel, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a model folder was unpickled")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    loaded, _ = load_trained_model(saved[1])
    assert isinstance(loaded, SamModel)


class _Planted:
    """Unpickling this runs code: it would create the file ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


def test_a_pickle_in_place_of_the_weights_is_refused_without_running_it(
    saved: tuple[SamModel, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "planted"
    folder.mkdir()
    (folder / "model_card.json").write_bytes((saved[1] / "model_card.json").read_bytes())
    marker = tmp_path / "code-ran"
    (folder / "weights.safetensors").write_bytes(pickle.dumps({"w": _Planted(marker)}))
    with pytest.raises(WeightsError, match="weights.safetensors' is corrupt or truncated"):
        load_trained_model(folder)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "missing"])
def test_a_damaged_weights_file_is_a_weights_error(saved: tuple[SamModel, Path], tmp_path: Path, damage: str) -> None:
    folder = tmp_path / "damaged"
    folder.mkdir()
    (folder / "model_card.json").write_bytes((saved[1] / "model_card.json").read_bytes())
    raw = (saved[1] / "weights.safetensors").read_bytes()
    weights = folder / "weights.safetensors"
    if damage == "truncated":
        weights.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        weights.write_bytes(b"\xff" * 64)
    elif damage == "empty":
        weights.write_bytes(b"")
    expected = "does not exist" if damage == "missing" else "is corrupt or truncated"
    with pytest.raises(WeightsError, match=expected):
        load_trained_model(folder)


def test_weights_the_model_does_not_have_are_refused(saved: tuple[SamModel, Path], tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "foreign"
    folder.mkdir()
    (folder / "model_card.json").write_bytes((saved[1] / "model_card.json").read_bytes())
    state = load_file(str(saved[1] / "weights.safetensors"))
    save_file({**state, "image_encoder.extra.weight": torch.zeros(2)}, str(folder / "weights.safetensors"))
    with pytest.raises(WeightsError, match=r"has weights the model does not have .*image_encoder\.extra\.weight"):
        load_trained_model(folder)


def test_a_card_without_its_fine_tuning_settings_is_refused(saved: tuple[SamModel, Path], tmp_path: Path) -> None:
    folder = tmp_path / "no-finetune"
    folder.mkdir()
    card = read_model_card(saved[1])
    (folder / "weights.safetensors").write_bytes((saved[1] / "weights.safetensors").read_bytes())
    for training in ({}, {"finetune": "lora"}, None):
        (folder / "model_card.json").write_text(json.dumps({**card, "training": training}), encoding="utf-8")
        with pytest.raises(WeightsError, match="needs a 'backbone' name and 'training.finetune' settings"):
            load_trained_model(folder)
    (folder / "model_card.json").write_text(
        json.dumps({**card, "training": {"finetune": {"method": "lora", "rnak": 4}}}), encoding="utf-8"
    )
    with pytest.raises(WeightsError, match="is damaged: .*'training.finetune.rnak'"):
        load_trained_model(folder)


# --- where a model may be written ----------------------------------------------------------------------------


def test_an_existing_non_empty_folder_is_never_overwritten(tmp_path: Path) -> None:
    folder = tmp_path / "atrium"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(OutputError, match="'.*atrium' already exists and is not empty. Choose a new name."):
        _save(folder, _tiny())
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    assert (folder / "notes.txt").read_text(encoding="utf-8") == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atrium"]  # no staging folder left behind


def test_an_existing_empty_folder_is_filled_and_no_staging_folder_is_left(tmp_path: Path) -> None:
    folder = tmp_path / "atrium"
    folder.mkdir()
    assert _save(folder, _tiny()) == folder
    assert sorted(p.name for p in folder.iterdir()) == ["model_card.json", "weights.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atrium"]


def test_a_model_cannot_be_written_into_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="the folder '.*absent' does not exist"):
        _save(tmp_path / "absent" / "atrium", _tiny())
    assert list(tmp_path.iterdir()) == []


def _copy_with_weights(saved: tuple[SamModel, Path], folder: Path, change: Any) -> Path:
    from safetensors.torch import load_file, save_file

    folder.mkdir()
    (folder / "model_card.json").write_bytes((saved[1] / "model_card.json").read_bytes())
    state = load_file(str(saved[1] / "weights.safetensors"))
    save_file(change(state), str(folder / "weights.safetensors"))
    return folder


def test_a_weights_file_missing_trained_tensors_is_refused(saved: tuple[SamModel, Path], tmp_path: Path) -> None:
    folder = _copy_with_weights(saved, tmp_path / "partial", lambda state: dict(list(state.items())[1:]))
    with pytest.raises(WeightsError, match="lacks 1 of the model's trained weights"):
        load_trained_model(folder)


def test_a_tensor_of_the_wrong_shape_is_a_weights_error(saved: tuple[SamModel, Path], tmp_path: Path) -> None:
    def reshape(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        name = next(iter(state))
        return {**state, name: torch.zeros(state[name].numel() + 1)}

    folder = _copy_with_weights(saved, tmp_path / "misshapen", reshape)
    with pytest.raises(WeightsError, match="does not fit its model card"):
        load_trained_model(folder)


def test_extra_card_fields_cannot_replace_the_cards_own(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="format"):
        _save(tmp_path / "m", _tiny(), extra={"tiny": True, "format": "x"})
    assert not (tmp_path / "m").exists()
