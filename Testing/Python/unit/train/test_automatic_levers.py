"""The automatic-mode levers on phantoms: each does what it claims.

- presence: a model trained with the presence head on true negatives leaves empty phantom slices
  empty, where the former default (10 % of the negatives, no presence head) marks them;
- refinement: a model trained to answer boxes too feeds the box around its automatic mask back,
  and the card carries the choice to the loaded model; a model trained without boxes feeds it to
  the decoder it started from, frozen (the pretrained one), widened by the margin;
- cached views: augmented views join the embedding cache, encoded once;
- min_steps: a few slices get more epochs;
- the int8 decoder (a speed lever): held-out phantoms' Dice moves by at most 0.005.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from phantom_task import base as _base
from phantom_task import config as _config
from phantom_task import count_encoder_calls
from phantom_task import tiny as _tiny

from samtune.data import make_phantom
from samtune.errors import ConfigurationError
from samtune.library import load_trained_model, read_model_card
from samtune.metrics import dice
from samtune.models import SamModel
from samtune.models.runtime import decoder_runtime
from samtune.predict import PredictConfig, predict_volume
from samtune.predict.decode import BOX_DECODER_MARGIN, BOX_DECODER_PASSES, decode_automatic, mask_box
from samtune.train import FineTuneOutcome, TrainConfig, TrainingCase, fine_tune
from samtune.train.fine_tuning import ONE_CASE_PROMPT_MIX
from samtune.train.presence import choose_presence_threshold

#: Phantom slices 0, 1, 10 and 11 hold no structure (it tapers off towards both ends along k).
SHAPE = (12, 48, 48)
FORMER = {"empty_slices": "keep_fraction", "presence_weight": 0.0}
PRESENCE = {"empty_slices": "balanced", "presence_weight": 1.0}


def _cases(n: int, first_seed: int = 0) -> list[TrainingCase]:
    out = []
    for seed in range(first_seed, first_seed + n):
        image, label = make_phantom(shape=SHAPE, seed=seed, structures=2)
        out.append(TrainingCase(f"case{seed}", image, label, structure="s1", value=1, fully_labelled=True))
    return out


def _empty_slices_marked(
    model: SamModel, cases: list[TrainingCase], config: PredictConfig | None = None
) -> tuple[int, int]:
    """(empty reference slices the model marks, empty reference slices) over ``cases``, automatic mode."""
    marked = empty = 0
    for case in cases:
        predicted = predict_volume(model, case.image, config or PredictConfig()).array != 0
        reference = case.label.array == 1
        truth = reference.reshape(reference.shape[0], -1).any(1)
        shown = predicted.reshape(predicted.shape[0], -1).any(1)
        marked += int((shown & ~truth).sum())
        empty += int((~truth).sum())
    return marked, empty


SETTINGS = {"finetune": {"method": "vanilla"}, "epochs": 12, "lr": 0.002, "val_fraction": 0.34}


@pytest.fixture(scope="module")
def presence(pretrained: dict[str, torch.Tensor]) -> FineTuneOutcome:
    """A tiny model fine-tuned on three phantoms with the presence head (the default)."""
    return fine_tune(_cases(3), _config(**SETTINGS, **PRESENCE), model=_base(pretrained))


def test_presence_head_leaves_empty_slices_empty(
    pretrained: dict[str, torch.Tensor], presence: FineTuneOutcome
) -> None:
    train, held_out = _cases(3), _cases(2, first_seed=20)
    former = fine_tune(train, _config(**SETTINGS, **FORMER), model=_base(pretrained))
    assert former.model.presence_threshold is None
    assert former.model.box_decoder is None  # a tiny base: no pretrained decoder that answers boxes
    assert presence.model.presence_threshold is not None  # chosen on the validation case's slices
    one_pass = PredictConfig(refine=0)  # the presence lever alone (refinement is measured on its own)
    former_marked, empty = _empty_slices_marked(former.model, held_out, one_pass)
    presence_marked, _ = _empty_slices_marked(presence.model, held_out, one_pass)
    ungated = PredictConfig(presence_threshold=0.0, refine=0)  # the same model, the gate switched off
    ungated_marked = sum(_empty_slices_marked(presence.model, [c], ungated)[0] for c in held_out)
    assert empty == 8
    assert former_marked >= 2, f"the former default marked {former_marked} of {empty} empty slices"
    assert presence_marked == 0, f"with the presence head {presence_marked} of {empty} empty slices were marked"
    assert ungated_marked > presence_marked  # the gate did the work


def test_the_int8_decoder_keeps_the_dice_of_held_out_phantoms_within_0_005(presence: FineTuneOutcome) -> None:
    model = presence.model
    assert decoder_runtime(model, "onnxruntime", precision="int8").precision == "int8"  # its check passed
    changes = []
    for case in _cases(3, first_seed=20):
        truth = case.label.array != 0
        fp32, int8 = (
            predict_volume(model, case.image, PredictConfig(runtime="onnxruntime", decoder_precision=precision))
            for precision in ("fp32", "int8")
        )
        reference = dice(fp32.array != 0, truth)
        assert reference > 0.5, f"the fp32 decoder reached only {reference:.3f}: no model to compare"
        changes.append(dice(int8.array != 0, truth) - reference)
    assert max(abs(c) for c in changes) <= 0.005, changes


def test_presence_threshold_is_chosen_to_drop_false_slices() -> None:
    # Two cases; slices with low presence probability carry only false positives.
    probability = [0.9, 0.8, 0.3, 0.2, 0.95, 0.35]
    intersection = [50, 40, 0, 0, 60, 0]
    predicted = [55, 45, 30, 20, 62, 25]
    reference = [52, 44, 0, 0, 61, 0]
    cases = ["a", "a", "a", "a", "b", "b"]
    threshold, dice = choose_presence_threshold(probability, intersection, predicted, reference, cases)
    assert 0.35 < threshold <= 0.8
    assert dice == pytest.approx(np.mean([2 * 90 / (100 + 96), 2 * 60 / (62 + 61)]))
    # No false positive to drop: the neutral 0.5 wins the tie (nothing is lost at 0.05..0.8 either).
    threshold, _ = choose_presence_threshold([0.9, 0.7], [10, 10], [10, 10], [10, 10], ["a", "a"])
    assert threshold == 0.5


def test_refinement_feeds_back_the_box_of_the_automatic_mask(tmp_path: Path) -> None:
    train = _cases(2)
    config = _config(finetune={"method": "vanilla"}, epochs=4, lr=0.002, val_fraction=0.0, prompt_mix=0.5)
    outcome = fine_tune(train, config, model=_tiny(), out_dir=tmp_path / "model")
    assert outcome.model.refine_passes == 1 and outcome.model.box_decoder is None  # it answers boxes itself
    assert read_model_card(tmp_path / "model")["automatic"]["refine"] == 1
    loaded, _ = load_trained_model(tmp_path / "model")
    assert loaded.refine_passes == 1 and loaded.presence_threshold is None and loaded.box_decoder is None
    embeddings = loaded.encode(torch.randn(2, 3, loaded.input_size, loaded.input_size))
    with torch.no_grad():
        plain = decode_automatic(loaded, embeddings, refine=0)
        refined = decode_automatic(loaded, embeddings)  # the model's own: one pass
        for b in range(2):
            box = mask_box((loaded.upscale_logits(plain[b : b + 1])[0, 0] > 0).numpy())
            if box is None:  # no automatic mask, nothing to refine
                assert torch.equal(refined[b], plain[b])
                continue
            expected, _ = loaded.decode(embeddings[b : b + 1], boxes=torch.as_tensor(box[None]))
            assert torch.allclose(refined[b], expected[0].float(), atol=1e-5)


def _decoder_state(model: SamModel) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("mask_decoder.", "prompt_encoder."))}


def test_a_model_trained_without_boxes_is_refined_by_the_decoder_it_started_from(tmp_path: Path) -> None:
    train = _cases(2)
    model = _tiny()
    before = _decoder_state(model)
    # fine_tune keeps it for pretrained backbones; a tiny random one (whose decoder never learned boxes) is told to
    model.keep_box_decoder()
    config = _config(finetune={"method": "vanilla"}, epochs=3, lr=0.01, val_fraction=0.0)
    outcome = fine_tune(train, config, model=model, out_dir=tmp_path / "model")
    trained = outcome.model
    assert trained.refine_passes == BOX_DECODER_PASSES == 2
    assert trained.box_decoder is not None
    kept = _decoder_state(trained.box_decoder)
    assert kept.keys() == before.keys() and all(torch.equal(kept[k], before[k]) for k in before)  # frozen
    assert not all(torch.equal(v, before[k]) for k, v in _decoder_state(trained).items())  # trained
    assert not any(p.requires_grad for p in trained.box_decoder.parameters())
    automatic = read_model_card(tmp_path / "model")["automatic"]
    assert automatic["refine"] == 2 and automatic["refine_decoder"] == "pretrained"

    loaded, _ = load_trained_model(tmp_path / "model")
    assert loaded.refine_passes == 2 and loaded.box_decoder is not None
    reloaded = _decoder_state(loaded.box_decoder)
    assert all(torch.equal(reloaded[k], before[k]) for k in before)  # rebuilt from the same base
    embeddings = loaded.encode(torch.randn(3, 3, loaded.input_size, loaded.input_size))
    with torch.no_grad():
        refined = decode_automatic(loaded, embeddings)
        expected, _ = loaded.decode(embeddings)  # pass 0: the fine-tuned decoder, no prompt
        for _ in range(2):  # each pass: the widened box of the mask, to the pretrained decoder
            for b in range(3):
                box = mask_box((loaded.upscale_logits(expected[b : b + 1])[0, 0] > 0).numpy(), BOX_DECODER_MARGIN)
                if box is not None:
                    expected[b], _ = loaded.box_decoder.decode(embeddings[b : b + 1], boxes=torch.as_tensor(box[None]))
        own = decode_automatic(loaded, embeddings, refine_decode=lambda e, b: loaded.decode(e, boxes=b))
    assert torch.allclose(refined, expected.float(), atol=1e-5)
    assert not torch.allclose(refined, own, atol=1e-3)  # the pretrained decoder answered, not the trained one


@pytest.mark.parametrize("cases", [1, 2])
def test_box_prompted_steps_on_one_case_are_warned_about(cases: int) -> None:
    events: list[dict[str, object]] = []
    config = _config(finetune={"method": "vanilla"}, epochs=1, val_fraction=0.0, prompt_mix=0.5)
    fine_tune(_cases(cases), config, model=_tiny(), on_event=events.append)
    warnings = [e["message"] for e in events if e["event"] == "log" and e.get("level") == "warning"]
    assert warnings == ([ONE_CASE_PROMPT_MIX.format(0.5)] if cases == 1 else [])


def test_mask_box_is_the_box_of_the_largest_object() -> None:
    mask = np.zeros((20, 30), dtype=bool)
    mask[2:4, 3:5] = True  # small object
    mask[8:15, 10:25] = True  # large object
    assert mask_box(mask).tolist() == [10.0, 8.0, 24.0, 14.0]
    assert mask_box(np.zeros((4, 4), dtype=bool)) is None
    # A margin moves each side out by that share of the width / height, within the mask's frame.
    assert mask_box(mask, 0.1).tolist() == pytest.approx([8.6, 7.4, 25.4, 14.6])
    assert mask_box(mask, 1.0).tolist() == [0.0, 2.0, 29.0, 19.0]


def test_cached_views_are_encoded_once_with_the_originals(monkeypatch: pytest.MonkeyPatch) -> None:
    train = _cases(1)
    model = _tiny()
    calls = count_encoder_calls(model, monkeypatch)
    config = _config(finetune={"method": "vanilla"}, epochs=3, val_fraction=0.0, cached_views=2,
                     augment={"enabled": True, "flip": 1.0})  # fmt: skip
    outcome = fine_tune(train, config, model=model)
    slices = outcome.summary["train_slices"]
    assert calls["images"] == 3 * slices  # originals + two views, once each, for three epochs


def test_views_move_masks_with_images() -> None:
    from samtune.train.config import AugmentConfig
    from samtune.train.data import build_samples, with_views

    samples = build_samples(_cases(1), input_size=64, pixel_norm="sam", slices=TrainConfig().slices,
                            empty_policy="drop", keep_fraction=0.0, seed=0)  # fmt: skip
    flipped = with_views(samples, 1, AugmentConfig(flip=1.0, rotate_p=0.0, zoom_p=0.0, intensity_p=0.0,
                                                   equalize_p=0.0), torch.Generator().manual_seed(0))  # fmt: skip
    n = len(samples)
    assert len(flipped) == 2 * n and flipped.case_ids[n:] == samples.case_ids
    assert torch.equal(flipped.masks[n:], samples.masks.flip(1, 2))  # both flips: a half turn
    assert torch.allclose(flipped.images[n:], samples.images.flip(2, 3), atol=1e-5)


def test_min_steps_gives_few_slices_more_epochs() -> None:
    train = _cases(1)
    config = _config(finetune={"method": "vanilla"}, epochs=2, val_fraction=0.0, min_steps=9, batch_size=4,
                     empty_slices="drop")  # fmt: skip
    outcome = fine_tune(train, config, model=_tiny())
    slices = outcome.summary["train_slices"]  # 8 slices show the structure: 2 steps per epoch
    assert slices == 8
    assert len(outcome.result.history) == 5  # ceil(9 / 2) epochs, not 2


def test_a_validation_score_that_stays_put_keeps_the_later_epoch_and_does_not_stop_early() -> None:
    train = _cases(2)  # one case trains (8 slices: 2 steps per epoch), one validates
    config = _config(finetune={"method": "vanilla"}, epochs=2, val_fraction=0.5, min_steps=12, batch_size=4,
                     empty_slices="drop", patience=1, lr=1e-12)  # fmt: skip
    outcome = fine_tune(train, config, model=_tiny())
    history = outcome.result.history
    assert len({h["val_dice"] for h in history}) == 1  # lr 1e-12: every epoch scores alike
    assert len(history) == 6  # ceil(12 / 2) epochs: patience 1 did not stop the run after epoch 2
    assert outcome.result.best_epoch == 6  # a tie goes to the later epoch, not the untrained first one


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"prompt_mix": 1.5}, "prompt_mix"),
        ({"presence_weight": -1}, "presence_weight"),
        ({"cached_views": -1}, "cached_views"),
        ({"min_steps": -3}, "min_steps"),
        ({"cached_views": 2, "augment": {"enabled": False}}, "augment.enabled"),
        ({"prompt_mode": "box", "presence_weight": 1.0}, "prompt_mode"),
        ({"optimiser": "bilevel", "finetune": {"learned_prompt": {"enabled": True}}, "cached_views": 2}, "D1/D2"),
        ({"optimiser": "bilevel", "finetune": {"learned_prompt": {"enabled": True}}, "prompt_mix": 0.5}, "plain"),
    ],
)
def test_lever_settings_are_checked(fields: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigurationError, match=says):
        TrainConfig.from_dict(fields)


def test_presence_trains_and_saves_the_iou_head() -> None:
    config = TrainConfig.from_dict({"presence_weight": 1.0})
    assert config.finetune.train_modules == ["mask_decoder.iou_prediction_head"]
    assert TrainConfig.from_dict(config.to_dict()).finetune.train_modules == ["mask_decoder.iou_prediction_head"]
