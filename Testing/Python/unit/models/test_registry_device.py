"""Backbone registry lookups and device selection."""

from __future__ import annotations

import pytest
import torch

from samtune.errors import ConfigurationError, DeviceError, UnknownNameError
from samtune.models import DEFAULT_BACKBONE, PixelNorm, get_backbone, list_backbones, resolve_device


def test_every_product_backbone_is_registered_with_its_input_size() -> None:
    sizes = {spec.name: spec.input_size for spec in list_backbones()}
    assert sizes == {
        "litemedsam": 256,
        "sam_vit_b": 1024,
        "sam_vit_l": 1024,
        "sam_vit_h": 1024,
        "mobilesam_vit_t": 1024,
        "medsam_vit_b": 1024,
    }
    assert list_backbones()[0].name == DEFAULT_BACKBONE == "litemedsam"
    assert get_backbone("litemedsam").bundled
    assert get_backbone("litemedsam").pixel_norm is PixelNorm.MINMAX
    assert get_backbone("sam_vit_b").pixel_norm is PixelNorm.SAM


def test_unknown_backbone_suggests_the_nearest_name() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'sam_vit_b'") as info:
        get_backbone("sam_vit_bb")
    assert "litemedsam" in str(info.value)  # lists the valid names
    assert isinstance(info.value, ValueError)


def test_auto_device_falls_back_to_cpu_without_accelerators(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("samtune.models.device._mps_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")


def test_cuda_without_gpu_is_a_clear_device_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="no CUDA GPU is available.*--device cpu"):
        resolve_device("cuda")
    with pytest.raises(DeviceError):
        resolve_device("cuda:1")


def test_nonsense_device_name_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="Unknown device 'gpu0'"):
        resolve_device("gpu0")
