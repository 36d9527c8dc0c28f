"""The shared wrapper contract, run over every method and backbone family on tiny models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from samtune.models import SamModel, build_model, load_checkpoint, save_state_dict
from samtune.peft import (
    FineTuneConfig,
    adapter_state_dict,
    apply_finetuning,
    balance_loss,
    merge_adapters,
    peft_wrappers,
    set_adapters_enabled,
    trainable_parameter_count,
    unmerge_adapters,
)

CASES = [
    ("sam_vit_b", "lora", "encoder_decoder"),
    ("sam_vit_b", "lora", "decoder"),
    ("sam_vit_b", "adapter", "encoder_decoder"),
    ("sam_vit_b", "conv_lora", "encoder_decoder"),
    ("sam_vit_b", "vanilla", "decoder"),
    ("litemedsam", "lora", "encoder_decoder"),
    ("litemedsam", "adapter", "encoder_decoder"),
    ("litemedsam", "conv_lora", "encoder_decoder"),
]


def _model(name: str) -> SamModel:
    torch.manual_seed(0)
    return build_model(name, tiny=True)


def _inputs(model: SamModel) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    size = model.input_size
    return torch.randn(2, 3, size, size, generator=g), torch.tensor([[10.0, 10, 120, 130], [30, 40, 200, 180]])


def _perturb(model: SamModel) -> None:
    """Give every zero-initialised delta non-zero weights (as training would)."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for _, wrapper in peft_wrappers(model):
            for _, p in wrapper.adapter_parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize(("backbone", "method", "scope"), CASES)
def test_injection_changes_nothing_at_step_zero(backbone: str, method: str, scope: str) -> None:
    model = _model(backbone)
    images, boxes = _inputs(model)
    with torch.no_grad():
        before = model(images, boxes=boxes)
    reports = apply_finetuning(model, FineTuneConfig(method=method, scope=scope))
    model.eval()
    with torch.no_grad():
        after = model(images, boxes=boxes)
    torch.testing.assert_close(after, before, rtol=0, atol=1e-5)
    if method != "vanilla":
        assert reports and all(r.wrapped for r in reports)
    assert trainable_parameter_count(model) > 0


@pytest.mark.parametrize(("backbone", "method", "scope"), CASES)
def test_one_step_changes_only_the_trainable_parameters(backbone: str, method: str, scope: str) -> None:
    model = _model(backbone)
    apply_finetuning(model, FineTuneConfig(method=method, scope=scope))
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    optimiser = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    images, boxes = _inputs(model)
    for _ in range(2):  # B is zero at step 0, so A only moves from the second step on
        loss = model(images, boxes=boxes).sigmoid().mean() + balance_loss(model)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    for name, p in model.named_parameters():
        if name in frozen:
            assert torch.equal(p, frozen[name]), f"frozen parameter {name} changed"
    moved = [n for n, p in model.named_parameters() if n in trainable and not torch.equal(p, trainable[n])]
    assert moved, "no trainable parameter moved"
    assert all("prompt_encoder" not in n for n in trainable)
    if method != "vanilla":
        adapter_names = set(adapter_state_dict(model))
        assert set(trainable) == adapter_names | {
            n for n in trainable if n.startswith("mask_decoder.") and method == "conv_lora"
        }


@pytest.mark.parametrize(("backbone", "method", "scope"), [c for c in CASES if c[1] == "lora"])
def test_merge_equals_unmerged_and_unmerge_restores(backbone: str, method: str, scope: str) -> None:
    model = _model(backbone)
    apply_finetuning(model, FineTuneConfig(method=method, scope=scope))
    _perturb(model)
    model.eval()
    images, boxes = _inputs(model)
    base_weights = {n: p.detach().clone() for n, p in model.named_parameters() if "base_layer" in n}
    with torch.no_grad():
        unmerged = model(images, boxes=boxes)
        merge_adapters(model)
        merged = model(images, boxes=boxes)
        unmerge_adapters(model)
        restored = model(images, boxes=boxes)
    torch.testing.assert_close(merged, unmerged, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(restored, unmerged, rtol=1e-5, atol=1e-5)
    for n, p in model.named_parameters():
        if n in base_weights:
            torch.testing.assert_close(p, base_weights[n], rtol=0, atol=1e-6)


@pytest.mark.parametrize(("backbone", "method", "scope"), [c for c in CASES if c[1] != "vanilla"])
def test_disable_switch_gives_the_base_model_back(backbone: str, method: str, scope: str) -> None:
    model = _model(backbone)
    images, boxes = _inputs(model)
    with torch.no_grad():
        base = model(images, boxes=boxes)
    apply_finetuning(model, FineTuneConfig(method=method, scope=scope))
    _perturb(model)
    model.eval()
    with torch.no_grad():
        adapted = model(images, boxes=boxes)
        set_adapters_enabled(model, False)
        disabled = model(images, boxes=boxes)
        set_adapters_enabled(model, True)
    assert not torch.allclose(adapted, base, atol=1e-4)
    torch.testing.assert_close(disabled, base, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("backbone", "method", "scope"), [c for c in CASES if c[1] != "vanilla"])
def test_adapter_only_state_dict_round_trip(backbone: str, method: str, scope: str, tmp_path: Path) -> None:
    model = _model(backbone)
    apply_finetuning(model, FineTuneConfig(method=method, scope=scope))
    _perturb(model)
    model.eval()
    state = adapter_state_dict(model)
    assert state and all("base_layer" not in k for k in state)
    path = save_state_dict(state, tmp_path / "adapter.safetensors")
    fresh = _model(backbone)
    apply_finetuning(fresh, FineTuneConfig(method=method, scope=scope))
    missing, unexpected = fresh.load_state_dict(load_checkpoint(path), strict=False)
    assert not unexpected and all(k not in missing for k in state)
    fresh.eval()
    images, boxes = _inputs(model)
    with torch.no_grad():
        torch.testing.assert_close(fresh(images, boxes=boxes), model(images, boxes=boxes), rtol=0, atol=0)
