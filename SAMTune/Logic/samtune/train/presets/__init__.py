"""Presets: JSON files that fill a training configuration, in this package's folder (so the wheel and the
extension both ship them).

Each file has ``name``, ``title``, ``description`` (one line for the GUI), ``when_to_use``,
``source`` (the paper it follows) and ``config`` (a partial :class:`TrainConfig`). Every field can be
overridden. ``SAMTUNE_PRESETS_DIR`` points to another folder.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from samtune.config_io import merge_overrides
from samtune.errors import ConfigurationError, unknown_name
from samtune.train.config import TrainConfig

_REQUIRED = ("name", "title", "description", "when_to_use", "source", "config")


def presets_dir() -> Path:
    """Folder holding the preset files (the extension's ``Logic/samtune/train/presets``)."""
    if os.environ.get("SAMTUNE_PRESETS_DIR"):
        return Path(os.environ["SAMTUNE_PRESETS_DIR"]).expanduser()
    return Path(__file__).resolve().parent


@dataclass(frozen=True)
class Preset:
    """A named training strategy."""

    name: str
    title: str
    description: str
    when_to_use: str
    source: str
    config: dict[str, Any]

    def train_config(self, overrides: dict[str, Any] | None = None) -> TrainConfig:
        """The preset's configuration with ``overrides`` deep-merged in (:func:`resolve_train_config`)."""
        return resolve_train_config(self, overrides=overrides)


def _read(path: Path) -> Preset:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigurationError(f"Preset file '{path}' is not valid JSON: {error}") from error
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ConfigurationError(f"Preset file '{path}' lacks {missing}.")
    unknown = sorted(set(data) - set(_REQUIRED))
    if unknown:
        raise ConfigurationError(f"Preset file '{path}' has unknown keys {unknown}.")
    return Preset(**{k: data[k] for k in _REQUIRED})


def list_presets() -> list[Preset]:
    """Every preset in :func:`presets_dir`, sorted by name."""
    folder = presets_dir()
    if not folder.is_dir():
        raise ConfigurationError(
            f"Preset folder '{folder}' does not exist. Set SAMTUNE_PRESETS_DIR to the presets folder."
        )
    return sorted((_read(p) for p in folder.glob("*.json")), key=lambda p: p.name)


def load_preset(name: str) -> Preset:
    """The preset called ``name``.

    Raises:
        UnknownNameError: With the valid names and the nearest one.
    """
    presets = {p.name: p for p in list_presets()}
    if name not in presets:
        raise unknown_name("preset", name, presets)
    return presets[name]


def resolve_train_config(
    preset: str | Preset | None,
    *,
    config: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
) -> TrainConfig:
    """The one resolver of "preset + overrides": the preset's fields, then ``config``, then ``overrides``,
    deep-merged in that order (the job, the command line, the Slicer panel and the presets list all use it).

    Raises:
        ConfigurationError: Neither a preset nor a configuration; unknown keys (named); invalid values.
        UnknownNameError: An unknown preset name.
    """
    if preset is None and config is None:
        raise ConfigurationError("A training job needs a 'preset' or a 'config'. See `samtune presets`.")
    if isinstance(preset, str):
        preset = load_preset(preset)
    base = preset.config if preset is not None else {}
    return TrainConfig.from_dict(merge_overrides(merge_overrides(base, config or {}), overrides or {}))


def changed_fields(preset: str | Preset, values: dict[str, Any]) -> dict[str, Any]:
    """The part of ``values`` (nested, as a configuration's JSON) that differs from the preset's resolved
    configuration: what a job's ``overrides`` should carry (the Slicer panel sends only this)."""
    if isinstance(preset, str):
        preset = load_preset(preset)
    resolved = preset.train_config().to_dict()

    def diff(given: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in given.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                nested = diff(value, base[key])
                if nested:
                    out[key] = nested
            elif key not in base or _plain(value) != _plain(base[key]):
                out[key] = value
        return out

    return diff(values, resolved)


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value
