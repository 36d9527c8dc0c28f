"""The trainer on tiny models and phantoms: it learns, reproduces, caches, and fails clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from phantom_task import base as _base
from phantom_task import cases as _cases
from phantom_task import config as _config
from phantom_task import count_encoder_calls
from phantom_task import tiny as _tiny

from samtune.data import make_phantom
from samtune.errors import DataError, DeviceError, OutputError, WeightsError
from samtune.library import load_trained_model, read_model_card
from samtune.peft import apply_finetuning
from samtune.predict import PredictConfig, predict_volume
from samtune.train import (
    OutOfMemoryError,
    TrainConfig,
    Trainer,
    TrainingCase,
    TrainingDivergedError,
    build_samples,
    fine_tune,
    load_preset,
)


def _zero_shot_dice(cases: list[TrainingCase], config: TrainConfig, state: dict[str, torch.Tensor]) -> float:
    model = _base(state)
    apply_finetuning(model, config.finetune)
    val = build_samples(
        cases[2:], input_size=model.input_size, pixel_norm=model.pixel_norm, slices=config.slices,
        empty_policy=config.empty_slices, keep_fraction=config.empty_keep_fraction, seed=0,
    )  # fmt: skip
    train = build_samples(
        cases[:2], input_size=model.input_size, pixel_norm=model.pixel_norm, slices=config.slices,
        empty_policy=config.empty_slices, keep_fraction=config.empty_keep_fraction, seed=0,
    )  # fmt: skip
    return Trainer(model, config, train, val).validate()["val_dice"]


PRESET_METHODS = {
    "cpu_quick": {"method": "lora", "scope": "decoder"},
    "single_dataset": {"method": "lora", "scope": "encoder_decoder"},
    "few_shot": {"method": "adapter", "scope": "encoder_decoder"},
    "conv_lora": {"method": "conv_lora", "scope": "encoder_decoder"},
}

#: Validation Dice gain over the pretrained base (zero-shot) that every method must reach on the
#: phantom; measured gains were 0.75 (decoder LoRA) to 0.93 (Conv-LoRA) from a base near 0.
DICE_MARGIN = 0.3


@pytest.mark.parametrize("preset", sorted(PRESET_METHODS))
def test_each_method_lowers_the_loss_and_beats_zero_shot(preset: str, pretrained: dict[str, torch.Tensor]) -> None:
    cases = _cases()
    config = _config(finetune=PRESET_METHODS[preset], epochs=12, lr=0.01 if preset != "vanilla" else 0.002)
    before = _zero_shot_dice(cases, config, pretrained)
    outcome = fine_tune(cases, config, model=_base(pretrained))
    history = outcome.result.history
    assert history[-1]["loss"] < history[0]["loss"]
    best = max(h["val_dice"] for h in history)
    assert best > before + DICE_MARGIN, f"{preset}: zero-shot {before:.3f}, best {best:.3f}"
    assert outcome.summary["train_cases"] == ["case0", "case1"] and outcome.summary["val_cases"] == ["case2"]


def test_same_seed_same_run() -> None:
    cases = _cases()
    config = _config(epochs=2, finetune={"method": "lora", "scope": "encoder_decoder"}, augment={"enabled": True})
    first = fine_tune(cases, config, model=_tiny())
    second = fine_tune(cases, config, model=_tiny())
    assert [h["loss"] for h in first.result.history] == [h["loss"] for h in second.result.history]
    for name, value in first.result.best_state.items():
        assert torch.equal(value, second.result.best_state[name])


def test_embedding_cache_encodes_each_slice_once(monkeypatch: pytest.MonkeyPatch) -> None:
    cases = _cases()
    model = _tiny()
    calls = count_encoder_calls(model, monkeypatch)
    outcome = fine_tune(cases, _config(epochs=3, finetune={"method": "lora", "scope": "decoder"}), model=model)
    n_train, n_val = outcome.summary["train_slices"], outcome.summary["val_slices"]
    assert calls["images"] == n_train + n_val  # cached: once per slice, not once per epoch

    model = _tiny()
    calls = count_encoder_calls(model, monkeypatch)
    uncached = _config(epochs=3, finetune={"method": "lora", "scope": "decoder"}, embedding_cache="off")
    fine_tune(cases, uncached, model=model)
    assert calls["images"] == 3 * (n_train + n_val)  # every epoch encodes training and validation slices


def test_model_folder_round_trip_and_hash_check(tmp_path: Path) -> None:
    cases = _cases()
    config = _config(epochs=2, finetune={"method": "lora", "scope": "encoder_decoder"})
    outcome = fine_tune(cases, config, model=_tiny(), out_dir=tmp_path / "model")
    card = read_model_card(tmp_path / "model")
    assert card["backbone"] == "sam_vit_b" and card["training"]["finetune"]["method"] == "lora"
    assert card["data"]["train_slices"] > 0 and "val_dice" in card["metrics"]
    assert (tmp_path / "model" / "weights.safetensors").stat().st_size < 200_000  # adapter weights only
    torch.manual_seed(0)  # a tiny base has random weights: rebuild the same ones (real bases load a file)
    loaded, _ = load_trained_model(tmp_path / "model")
    image, _ = make_phantom(shape=(4, 48, 48), seed=9)
    expected = predict_volume(outcome.model, image, PredictConfig())
    np_equal = (predict_volume(loaded, image, PredictConfig()).array == expected.array).all()
    assert np_equal
    with pytest.raises(OutputError, match="already exists"):
        fine_tune(cases, config, model=_tiny(), out_dir=tmp_path / "model")


def test_changed_backbone_weights_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model_card.json").write_text(
        json.dumps({"format": "samtune-model", "backbone": "litemedsam", "backbone_sha256": "0" * 64,
                    "training": {"finetune": {}}}),
        encoding="utf-8",
    )  # fmt: skip
    with pytest.raises(WeightsError, match="trained on litemedsam weights with SHA-256 0000"):
        load_trained_model(folder)
    with pytest.raises(WeightsError, match="not a SAMTune model folder"):
        load_trained_model(tmp_path)


def test_no_labelled_slice_and_single_case_validation() -> None:
    image, label = make_phantom(shape=(4, 32, 32))
    empty = TrainingCase("empty", image, label.with_array(label.array * 0))
    with pytest.raises(DataError, match="empty"):
        fine_tune([empty, empty], _config(val_fraction=0.0), model=_tiny())
    with pytest.raises(DataError, match="at least two labelled cases"):
        fine_tune(_cases(1), _config(val_fraction=0.2), model=_tiny())


def test_cuda_requested_without_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        fine_tune(_cases(2), _config(device="cuda", val_fraction=0.0), model=_tiny())


def test_preset_whose_weights_are_missing_says_how_to_get_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAMTUNE_WEIGHTS_DIR", str(tmp_path))
    config = load_preset("single_dataset").train_config({"device": "cpu"})
    with pytest.raises(WeightsError, match="No weights for backbone 'sam_vit_b'.*download_weights"):
        fine_tune(_cases(2), config)


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    cases = _cases()
    config = _config(epochs=4, finetune={"method": "lora", "scope": "decoder"})
    model = _tiny()
    apply_finetuning(model, config.finetune)
    kwargs = dict(input_size=model.input_size, pixel_norm=model.pixel_norm, slices=config.slices,
                  empty_policy="keep_fraction", keep_fraction=0.1, seed=0)  # fmt: skip
    trainer = Trainer(model, config, build_samples(cases[:2], **kwargs), build_samples(cases[2:], **kwargs))
    saved: list[int] = []
    original = trainer._loss

    def poisoned(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        loss = original(logits, masks)
        return loss * float("nan") if trainer.scheduler.last_epoch >= trainer.steps_per_epoch else loss

    monkeypatch.setattr(trainer, "_loss", poisoned)
    with pytest.raises(TrainingDivergedError, match="Lower the learning rate"):
        trainer.fit(checkpoint=lambda state, reason: saved.append(state["result"]["history"][-1]["epoch"]))
    assert saved == [1]  # the epoch-1 checkpoint exists; nothing after the divergence


def test_out_of_memory_suggests_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    cases = _cases()
    config = _config(epochs=1, finetune={"method": "lora", "scope": "decoder"})
    model = _tiny()
    apply_finetuning(model, config.finetune)
    kwargs = dict(input_size=model.input_size, pixel_norm=model.pixel_norm, slices=config.slices,
                  empty_policy="keep_fraction", keep_fraction=0.1, seed=0)  # fmt: skip
    trainer = Trainer(model, config, build_samples(cases, **kwargs))

    def out_of_memory(indices: torch.Tensor) -> tuple[float, float]:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(trainer, "train_step", out_of_memory)
    with pytest.raises(OutOfMemoryError, match="smaller batch size.*gradient_checkpointing.*CPU quick"):
        trainer.fit()


def test_interactive_preset_trains_with_simulated_boxes(pretrained: dict[str, torch.Tensor]) -> None:
    cases = _cases()
    config = _config(finetune={"method": "adapter", "scope": "encoder_decoder"}, prompt_mode="box", epochs=12)
    before = _zero_shot_dice(cases, config, pretrained)
    outcome = fine_tune(cases, config, model=_base(pretrained))
    best = max(h["val_dice"] for h in outcome.result.history)
    assert best > before + DICE_MARGIN, f"box-prompted: zero-shot {before:.3f}, best {best:.3f}"


def test_mixed_freehand_prompts_train_through_the_mask_input(pretrained: dict[str, torch.Tensor]) -> None:
    cases = _cases()
    config = _config(finetune={"method": "adapter", "scope": "encoder_decoder"}, prompt_mode="mixed", epochs=12)
    before = _zero_shot_dice(cases, config, pretrained)
    model = _base(pretrained)
    seen: list[bool] = []
    original = model.prompt_encoder.forward
    model.prompt_encoder.forward = lambda points, boxes, masks: (
        seen.append(masks is not None) or original(points, boxes, masks)
    )
    outcome = fine_tune(cases, config, model=model)
    best = max(h["val_dice"] for h in outcome.result.history)
    assert best > before + DICE_MARGIN, f"mixed prompts: zero-shot {before:.3f}, best {best:.3f}"
    assert any(seen) and not all(seen)  # lasso and mask batches reach SAM's mask input, the others do not
