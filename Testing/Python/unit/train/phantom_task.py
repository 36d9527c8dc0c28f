"""A small phantom task shared by the trainer tests: two-structure phantoms and tiny models.

A tiny random model cannot show fine-tuning at work, so :func:`pretrain_other_structure` first
trains one fully on structure 2; its zero-shot answer for structure 1 is then wrong, as a real
backbone's is before fine-tuning.
"""

from __future__ import annotations

import pytest
import torch

from samtune.data import make_phantom
from samtune.models import SamModel, build_model
from samtune.train import TrainConfig, TrainingCase, fine_tune


def cases(n: int = 3, *, value: int = 1, first_seed: int = 0) -> list[TrainingCase]:
    """Two-structure phantoms; the cases teach structure ``value``."""
    out = []
    for seed in range(first_seed, first_seed + n):
        image, label = make_phantom(shape=(6, 48, 48), seed=seed, structures=2)
        out.append(TrainingCase(f"case{seed}", image, label, structure=f"s{value}", value=value, fully_labelled=True))
    return out


def tiny(name: str = "sam_vit_b") -> SamModel:
    """A tiny random model of backbone family ``name`` (seeded)."""
    torch.manual_seed(0)
    return build_model(name, tiny=True)


def base(state: dict[str, torch.Tensor]) -> SamModel:
    """A tiny model holding ``state``."""
    model = tiny()
    model.load_state_dict(state)
    return model


def config(**overrides: object) -> TrainConfig:
    """A fast CPU configuration for the phantom task."""
    values = {
        "backbone": "sam_vit_b",
        "epochs": 6,
        "batch_size": 4,
        "lr": 0.01,
        "warmup_steps": 2,
        "val_fraction": 0.34,
        "device": "cpu",
        "augment": {"enabled": False},
        "patience": 0,
    }
    values.update(overrides)
    return TrainConfig.from_dict(values)


def pretrain_other_structure() -> dict[str, torch.Tensor]:
    """State of a tiny model fully trained on structure 2 of four phantoms."""
    model = tiny()
    settings = config(finetune={"method": "vanilla", "scope": "encoder_decoder"}, epochs=15, lr=0.002, val_fraction=0.0)
    fine_tune(cases(4, value=2, first_seed=10), settings, model=model)
    return {k: v.clone() for k, v in model.state_dict().items()}


def count_encoder_calls(model: SamModel, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count the slices ``model`` encodes from now on (``calls["images"]``)."""
    calls = {"images": 0}
    original = model.encode

    def counting(images: torch.Tensor) -> torch.Tensor:
        calls["images"] += images.shape[0]
        return original(images)

    monkeypatch.setattr(model, "encode", counting)
    return calls
