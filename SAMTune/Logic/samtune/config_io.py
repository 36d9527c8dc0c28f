"""JSON round trip of configuration dataclasses; unknown keys are rejected by name."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

from samtune.errors import ConfigurationError, did_you_mean

T = TypeVar("T")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) configuration dataclass; tuples become lists."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(config)  # type: ignore[no-any-return]


def config_from_dict(cls: type[T], data: dict[str, Any], *, where: str = "") -> T:
    """Build ``cls`` from ``data``, recursing into nested dataclass fields.

    Raises:
        ConfigurationError: A key that ``cls`` does not have (named, with the nearest valid key), or
            a value the dataclass rejects.
    """
    if not isinstance(data, dict):
        raise ConfigurationError(f"Expected a JSON object for {where or cls.__name__}, got {type(data).__name__}.")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    try:
        hints = typing.get_type_hints(cls)
    except (TypeError, NameError):  # Python 3.9 cannot evaluate `X | Y`; __post_init__ converts dicts
        hints = {}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in fields:
            raise ConfigurationError(
                f"Unknown configuration key '{path}'.{did_you_mean(key, fields)} "
                f"Valid keys: {', '.join(sorted(fields))}."
            )
        hint = hints.get(key)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = config_from_dict(hint, value, where=path)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as error:
        raise ConfigurationError(f"Invalid configuration for {where or cls.__name__}: {error}") from error


def merge_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into a copy of ``base`` (nested dicts merge, other values replace)."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_overrides(out[key], value)
        else:
            out[key] = value
    return out
