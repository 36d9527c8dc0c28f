"""The per-user model library: trained model folders with their cards; rename, delete, export, import.

A library is a folder of model folders (``weights.safetensors`` + ``model_card.json``, see
:mod:`samtune.library.model_folder`). Its location: ``SAMTUNE_MODELS_DIR`` if set, else
``$SAMTUNE_HOME/models``, else the platform's per-user data folder (``~/.local/share/samtune/models``
on Linux, ``~/Library/Application Support/samtune/models`` on macOS, ``%APPDATA%\\samtune\\models``
on Windows). The Slicer module lets the user override it in Application Settings.

Exported models are zip files holding exactly the two files of a model folder; importing checks
member names (no paths, nothing else), sizes, the card and the weights' header before anything is
added, and never unpickles anything.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from samtune.atomic import as_if_created
from samtune.errors import OutputError, WeightsError
from samtune.library.card import MODEL_CARD, MODEL_WEIGHTS, read_model_card
from samtune.paths import user_dir

#: Largest weights file an import accepts (a full ViT-H fine-tune is ~2.5 GB).
MAX_IMPORT_BYTES = 4 << 30

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._()+-]{0,99}$")


def default_models_dir() -> Path:
    """The per-user model library folder (see the module docstring)."""
    return user_dir("models", override_env="SAMTUNE_MODELS_DIR", cache=False)


def check_model_name(name: str) -> str:
    """A model name usable as a folder name on every platform.

    Raises:
        OutputError: Empty, too long, or with characters other than letters, digits, space and ``._()+-``.
    """
    name = name.strip()
    if not _NAME.match(name) or name.endswith((".", " ")):
        raise OutputError(
            f"'{name}' cannot be a model name: use 1-100 letters, digits, spaces or ._()+- "
            "starting with a letter or digit (e.g. 'left atrium LGE')."
        )
    return name


@dataclass
class ModelEntry:
    """One model of the library and what its card says."""

    path: Path
    card: dict[str, Any]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def backbone(self) -> str:
        return str(self.card.get("backbone", "?"))

    @property
    def structures(self) -> list[str]:
        return [str(self.card.get("structure", "?"))]

    @property
    def validation_dice(self) -> float | None:
        metrics = self.card.get("metrics") or {}
        for key in ("val_dice", "d2_dice"):
            if isinstance(metrics.get(key), (int, float)):
                return float(metrics[key])
        return None

    @property
    def created(self) -> str:
        return str(self.card.get("created", ""))

    def summary(self) -> str:
        """One paragraph for the model-card view."""
        data = self.card.get("data") or {}
        dice = self.validation_dice
        training = self.card.get("training") or {}
        method = (training.get("finetune") or {}).get("method", "?")
        return (
            f"{self.name}: {', '.join(self.structures)} on {self.backbone} ({method}); "
            f"{data.get('cases', '?')} case(s), {data.get('train_slices', '?')} training slice(s); "
            f"validation Dice {'n/a' if dice is None else f'{dice:.3f}'}; created {self.created or '?'}."
        )


class ModelLibrary:
    """The models in one folder."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_models_dir()

    def models(self) -> list[ModelEntry]:
        """Every readable model, sorted by name (damaged folders are listed by :meth:`problems`)."""
        if not self.root.is_dir():
            return []
        entries = []
        for folder in sorted(self.root.iterdir(), key=lambda p: p.name.lower()):
            if folder.is_dir() and not folder.name.startswith(".") and (folder / MODEL_CARD).is_file():
                try:
                    entries.append(ModelEntry(folder, read_model_card(folder)))
                except WeightsError:
                    continue
        return entries

    def problems(self) -> list[str]:
        """Folders that look like models but cannot be used, with the reason."""
        found = []
        if self.root.is_dir():
            for folder in sorted(self.root.iterdir()):
                if folder.is_dir() and not folder.name.startswith("."):
                    try:
                        read_model_card(folder)
                        if not (folder / MODEL_WEIGHTS).is_file():
                            found.append(f"{folder.name}: {MODEL_WEIGHTS} is missing")
                    except WeightsError as error:
                        found.append(f"{folder.name}: {error}")
        return found

    def get(self, name: str) -> ModelEntry:
        folder = self.root / name
        if not (folder / MODEL_CARD).is_file():
            known = [m.name for m in self.models()]
            raise WeightsError(f"No model '{name}' in the library '{self.root}' (it has {known or 'none'}).")
        return ModelEntry(folder, read_model_card(folder))

    def new_model_path(self, name: str) -> Path:
        """Where a model of that name goes; refuses names that exist."""
        name = check_model_name(name)
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / name
        if path.exists():
            raise OutputError(f"A model named '{name}' already exists in '{self.root}'. Choose another name.")
        return path

    def rename(self, name: str, new_name: str) -> ModelEntry:
        entry = self.get(name)
        target = self.new_model_path(new_name)
        os.replace(entry.path, target)
        card = {**entry.card, "name": target.name}
        _write_json_atomic(target / MODEL_CARD, card)
        return ModelEntry(target, card)

    def delete(self, name: str) -> None:
        shutil.rmtree(self.get(name).path)

    def export_zip(self, name: str, destination: str | Path) -> Path:
        """Write ``destination`` (a ``.zip``) with the model's two files, atomically."""
        entry = self.get(name)
        destination = Path(destination).expanduser()
        if destination.suffix.lower() != ".zip":
            destination = destination.with_name(destination.name + ".zip")
        if not destination.parent.is_dir():
            raise OutputError(f"Cannot export to '{destination}': the folder '{destination.parent}' does not exist.")
        handle, temporary = tempfile.mkstemp(prefix=f".{destination.name}.", dir=destination.parent)
        os.close(handle)
        try:
            with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                archive.write(entry.path / MODEL_CARD, MODEL_CARD)
                archive.write(entry.path / MODEL_WEIGHTS, MODEL_WEIGHTS)
            as_if_created(temporary)
            os.replace(temporary, destination)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return destination

    def import_model(self, source: str | Path, name: str | None = None) -> ModelEntry:
        """Add a model from an exported ``.zip`` or a model folder (e.g. one trained on a server).

        Raises:
            WeightsError: Not a SAMTune model, unexpected or oversized members, a damaged card or weights.
            OutputError: The name is taken.
        """
        source = Path(source).expanduser()
        staging = Path(tempfile.mkdtemp(prefix=".import.", dir=self._ensure_root()))
        as_if_created(staging, directory=True)
        try:
            if source.is_dir():
                for member in (MODEL_CARD, MODEL_WEIGHTS):
                    if not (source / member).is_file():
                        raise WeightsError(f"'{source}' is not a SAMTune model folder: {member} is missing.")
                    shutil.copyfile(source / member, staging / member)
                default_name = source.name
            else:
                _extract_model_zip(source, staging)
                default_name = source.stem
            card = read_model_card(staging)
            _check_weights_header(staging / MODEL_WEIGHTS)
            target = self.new_model_path(name or str(card.get("name") or default_name))
            os.replace(staging, target)
            return ModelEntry(target, card)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _ensure_root(self) -> Path:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(f"Cannot create the model library folder '{self.root}' ({error}).") from error
        return self.root


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    from samtune.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2))


def _extract_model_zip(source: Path, staging: Path) -> None:
    if not zipfile.is_zipfile(source):
        raise WeightsError(f"'{source}' is not a zip file. Import a model exported by SAMTune (.zip) or its folder.")
    with zipfile.ZipFile(source) as archive:
        members = {info.filename: info for info in archive.infolist()}
        expected = {MODEL_CARD, MODEL_WEIGHTS}
        if set(members) != expected:
            raise WeightsError(
                f"'{source.name}' holds {sorted(members)}; a SAMTune model holds exactly {sorted(expected)}."
            )
        if members[MODEL_WEIGHTS].file_size > MAX_IMPORT_BYTES or members[MODEL_CARD].file_size > 1 << 20:
            raise WeightsError(f"'{source.name}' is larger than any SAMTune model; it was not imported.")
        for member in expected:
            with archive.open(member) as src, open(staging / member, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def _check_weights_header(path: Path) -> None:
    """Parse the safetensors header (no tensor is loaded, nothing is unpickled)."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            names = list(handle.keys())
    except Exception as error:  # safetensors raises its own error types for damaged headers
        raise WeightsError(f"The weights '{path.name}' are damaged or not safetensors ({error}).") from error
    if not names:
        raise WeightsError(f"The weights '{path.name}' hold no tensors.")


__all__ = ["ModelEntry", "ModelLibrary", "check_model_name", "default_models_dir"]
