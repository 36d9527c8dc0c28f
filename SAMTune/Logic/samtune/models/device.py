"""Choosing the compute device: ``auto`` (CUDA, then Apple MPS, then CPU) or an explicit one."""

from __future__ import annotations

import re

import torch

from samtune.errors import ConfigurationError, DeviceError

_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Turn a device name into an available :class:`torch.device`.

    Args:
        name: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.

    Raises:
        ConfigurationError: The name is not a device name.
        DeviceError: The device is not available on this machine.
    """
    if isinstance(name, torch.device):
        name = str(name)
    text = str(name).strip().lower()
    if not _PATTERN.match(text):
        raise ConfigurationError(f"Unknown device '{name}'. Use auto, cpu, cuda, cuda:N (N = GPU index) or mps.")
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"'{name}' was requested but no CUDA GPU is available (torch {torch.__version__}, "
                f"built with CUDA {torch.version.cuda or 'none'}). Use --device cpu, or auto."
            )
        index = int(text.split(":")[1]) if ":" in text else 0
        count = torch.cuda.device_count()
        if index >= count:
            raise DeviceError(f"'{name}' was requested but only {count} CUDA device(s) exist (0..{count - 1}).")
        return torch.device(text)
    if text == "mps" and not _mps_available():
        raise DeviceError("'mps' was requested but Apple Metal is not available here. Use --device cpu.")
    return torch.device(text)


def describe_devices() -> list[dict[str, object]]:
    """Devices this machine offers, for a device picker: name, kind and (CUDA) memory in bytes."""
    devices: list[dict[str, object]] = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(index)
            devices.append(
                {
                    "name": f"cuda:{index}",
                    "kind": "cuda",
                    "label": torch.cuda.get_device_name(index),
                    "free_bytes": int(free),
                    "total_bytes": int(total),
                }
            )
    if _mps_available():
        devices.append({"name": "mps", "kind": "mps", "label": "Apple GPU (Metal)"})
    devices.append({"name": "cpu", "kind": "cpu", "label": "CPU"})
    return devices
