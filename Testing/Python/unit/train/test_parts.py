"""Losses, schedule, augmentation, simulated prompts, NSD and configuration, on hand-made inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samtune.errors import ConfigurationError, UnknownNameError
from samtune.metrics import normalized_surface_dice
from samtune.train import (
    AugmentConfig,
    TrainConfig,
    augment_batch,
    dice_ce_loss,
    list_presets,
    load_preset,
    soft_dice_loss,
    structure_loss,
    warmup_poly_factor,
)
from samtune.train.simulated_prompts import simulate_box, simulate_point


def test_dice_and_ce_losses_by_hand() -> None:
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2, :] = 1
    right = torch.where(target > 0, 20.0, -20.0)
    wrong = -right
    assert soft_dice_loss(right, target) == pytest.approx(0.0, abs=1e-6)
    assert soft_dice_loss(wrong, target) == pytest.approx(1 - 1 / 17, abs=1e-3)  # 1 - (2*0+1)/(8+8+1)
    assert dice_ce_loss(right, target) == pytest.approx(0.0, abs=1e-6)
    only_ce = dice_ce_loss(torch.zeros(1, 1, 4, 4), target, dice_weight=0.0, ce_weight=1.0)
    assert only_ce == pytest.approx(np.log(2), abs=1e-6)
    assert structure_loss(right, target) < structure_loss(wrong, target)


def test_warmup_then_poly_decay() -> None:
    factors = [warmup_poly_factor(s, total_steps=14, warmup_steps=4) for s in range(14)]
    assert factors[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert factors[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[4:], factors[5:]))
    assert warmup_poly_factor(14, total_steps=14, warmup_steps=4) == 0.0
    assert warmup_poly_factor(0, total_steps=10, warmup_steps=0) == 1.0  # no stray tiny first step


def test_augmentation_moves_image_and_mask_together() -> None:
    mask = torch.zeros(3, 32, 32, dtype=torch.bool)
    mask[:, 4:14, 6:25] = True
    image = mask[:, None].float().repeat(1, 3, 1, 1)
    config = AugmentConfig(flip=0.5, rotate_p=1.0, rotate_degrees=40, zoom_p=1.0, intensity_p=0.0, equalize_p=0.0)
    images, masks = augment_batch(image, mask, config, torch.Generator().manual_seed(1))
    moved = images[:, 0] > 0.5
    assert not torch.equal(masks, mask)  # something happened
    agreement = (moved == masks).float().mean()
    assert agreement > 0.98  # the image's bright rectangle is where the mask went
    again, again_masks = augment_batch(image, mask, config, torch.Generator().manual_seed(1))
    assert torch.equal(again, images) and torch.equal(again_masks, masks)
    same, same_mask = augment_batch(image, mask, AugmentConfig(enabled=False), torch.Generator())
    assert same is image and same_mask is mask
    with pytest.raises(ConfigurationError, match="probability"):
        AugmentConfig(flip=2.0)


def test_simulated_box_and_point() -> None:
    rng = np.random.default_rng(0)
    mask = np.zeros((100, 100), dtype=bool)
    mask[20:60, 30:50] = True  # 40 rows x 20 columns
    mask[90:95, 90:95] = True  # a smaller second object: the box follows the largest one
    for _ in range(50):
        x0, y0, x1, y1 = simulate_box(mask, rng)
        assert abs(x0 - 30) <= 20 and abs(x1 - 49) <= 20 and abs(y0 - 20) <= 20 and abs(y1 - 59) <= 20
        assert x1 < 90 or abs(x1 - 49) <= 20
        x, y = simulate_point(mask, rng)
        assert mask[int(y), int(x)]
        assert min(x - 30, 49 - x, y - 20, 59 - y) >= 3  # away from the edge (deeper than the median)


def test_nsd_by_hand() -> None:
    a = np.zeros((20, 20), dtype=bool)
    a[5:15, 5:15] = True
    shifted = np.roll(a, 1, axis=1)
    far = np.roll(a, 4, axis=1)
    assert normalized_surface_dice(a, a, spacing=(1.0, 1.0)) == 1.0
    assert normalized_surface_dice(a, shifted, spacing=(1.0, 1.0), tolerance_mm=1.0) == 1.0
    assert normalized_surface_dice(a, far, spacing=(1.0, 1.0), tolerance_mm=1.0) < 0.7
    assert normalized_surface_dice(a, far, spacing=(0.25, 0.25), tolerance_mm=1.0) == 1.0  # 4 px = 1 mm
    assert normalized_surface_dice(a, np.zeros_like(a), spacing=(1.0, 1.0)) == 0.0


def test_config_round_trip_and_unknown_keys() -> None:
    config = TrainConfig(epochs=3, finetune={"method": "adapter", "scope": "encoder_decoder"})
    again = TrainConfig.from_dict(config.to_dict())
    assert again == config
    with pytest.raises(ConfigurationError, match="Unknown configuration key 'epoch'. Did you mean 'epochs'"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ConfigurationError, match="finetune.lora.rnak"):
        TrainConfig.from_dict({"finetune": {"lora": {"rnak": 3}}})
    with pytest.raises(ConfigurationError, match="bilevel"):
        TrainConfig(optimiser="bilevel")
    with pytest.raises(ConfigurationError, match="Did you mean 'automatic'"):
        TrainConfig(prompt_mode="automatik")
    assert TrainConfig(finetune={"method": "lora", "scope": "decoder"}).uses_cache
    assert not TrainConfig(finetune={"method": "conv_lora", "scope": "decoder"}).uses_cache


def test_presets_are_complete_and_overridable() -> None:
    presets = {p.name: p for p in list_presets()}
    assert {"cpu_quick", "single_dataset", "few_shot", "interactive", "conv_lora"} <= set(presets)
    for preset in presets.values():
        assert preset.description and preset.when_to_use and preset.source
        preset.train_config()  # every preset is a valid configuration
    few = presets["few_shot"].train_config({"epochs": 2, "finetune": {"adapter": {"ratio": 0.5}}})
    assert few.epochs == 2 and few.finetune.adapter.ratio == 0.5 and few.finetune.method == "adapter"
    assert presets["interactive"].train_config().prompt_mode == "mixed"
    with pytest.raises(UnknownNameError, match="Did you mean 'few_shot'"):
        load_preset("fewshot")


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    from samtune.models import build_model
    from samtune.peft import FineTuneConfig, apply_finetuning
    from samtune.train.gradient_checkpointing import enable_gradient_checkpointing

    def gradients(checkpointed: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = build_model("sam_vit_b", tiny=True)
        apply_finetuning(model, FineTuneConfig(method="lora", scope="encoder_decoder"))
        if checkpointed:
            assert enable_gradient_checkpointing(model) == 2
        model.train()
        for p in model.parameters():
            if p.requires_grad:
                torch.nn.init.normal_(p, std=0.02)
        images = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(1))
        model(images, boxes=torch.tensor([[10.0, 10, 100, 100], [5, 5, 60, 80]])).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain, checkpointed = gradients(False), gradients(True)
    assert plain.keys() == checkpointed.keys() and plain
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-4, atol=1e-6)


def test_simulated_freehand_prompts_follow_the_object() -> None:
    from samtune.train.simulated_prompts import (
        simulate_lasso,
        simulate_mask_prompt,
        simulate_prompts,
        simulate_scribble,
    )

    rng = np.random.default_rng(1)
    mask = np.zeros((100, 100), dtype=bool)
    mask[20:60, 30:50] = True
    negatives = 0
    for _ in range(20):
        points, labels = simulate_scribble(mask, rng)
        inside = mask[points[:, 1].astype(int), points[:, 0].astype(int)]
        assert (inside == (labels == 1)).all() and (labels == 1).sum() >= 1  # positives in, negatives out
        negatives += int((labels == 0).sum())
        box, interior = simulate_lasso(mask, rng)
        assert interior[mask].all() and 1 <= (interior.sum() - mask.sum()) / 120 <= 7  # grown by 1-6 px
        assert box[0] <= 30 and box[2] >= 49 and box[1] <= 20 and box[3] >= 59
        rough, click, label = simulate_mask_prompt(mask, rng)
        x, y = int(click[0]), int(click[1])
        assert (mask[y, x] and not rough[y, x]) if label == 1 else (rough[y, x] and not mask[y, x])
    assert negatives > 0  # half of the scribbles carry a negative stroke
    batch = torch.as_tensor(np.stack([mask, np.roll(mask, 10, axis=1)]))
    for mode, has in {"scribble": "p", "lasso": "bm", "mask": "pm", "box": "b", "point": "p", "automatic": ""}.items():
        out = simulate_prompts(batch, mode, rng)
        assert (out.boxes is not None, out.points is not None, out.masks is not None) == tuple(c in has for c in "bpm")
        if out.points is not None:  # ragged point sets are padded with label -1
            assert out.points[0].shape[:2] == out.points[1].shape and out.points[1].shape[0] == 2
    kinds = {tuple(v is not None for v in vars(simulate_prompts(batch, "mixed", rng)).values()) for _ in range(40)}
    assert len(kinds) == 4  # box, points (a point or a scribble), lasso (box + mask), mask (points + mask)
