"""Command-line options generated from configuration dataclasses (:func:`samtune.config_io.option`).

An option is declared once, on its field, with its help text; :func:`add_options` adds one
``argparse`` option per annotated field (nested dataclasses included) and :func:`options_to_dict`
reads the options the user gave back into the nested JSON shape of the dataclass, so defaults are
the dataclass's own and ``config_from_dict`` checks the values as for any job file.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any

from samtune.config_io import field_types

#: ``dest`` prefix of generated options in the parsed namespace.
_DEST = "config:"


def _dataclass_of(hint: Any) -> type | None:
    """The dataclass ``hint`` names (also through ``X | None``), else ``None``."""
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint
    if typing.get_origin(hint) in (typing.Union, getattr(types, "UnionType", None)):
        classes = [a for a in typing.get_args(hint) if isinstance(a, type) and dataclasses.is_dataclass(a)]
        return classes[0] if len(classes) == 1 else None
    return None


def _optioned_fields(cls: type, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any, Any]]:
    """``(field path, field, type hint)`` of every option field of ``cls`` and its nested dataclasses."""
    hints = field_types(cls)  # also on Python 3.9, where get_type_hints cannot read `X | None`
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        nested = _dataclass_of(hints[f.name])
        if nested is not None:
            yield from _optioned_fields(nested, (*path, f.name))
        elif "cli" in f.metadata:
            yield (*path, f.name), f, hints[f.name]


def _scalar_type(hint: Any) -> Any:
    """The element type argparse converts to: ``float`` for ``list[list[float]]``, ``int`` for ``int | None``."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (list, tuple) or len(args) == 1:
        return _scalar_type(args[0]) if args else str
    return hint if hint in (int, float, str) or (isinstance(hint, type) and issubclass(hint, enum.Enum)) else str


def _argparse_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return convert


def _default_text(f: dataclasses.Field) -> str:  # type: ignore[type-arg]
    value = f.default
    if value is dataclasses.MISSING or value is None or value is False:
        return ""
    return f" (default {value.value if isinstance(value, enum.Enum) else value})"


def add_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one option per :func:`~samtune.config_io.option` field of ``cls`` (nested ones included)."""
    for path, f, hint in _optioned_fields(cls):
        cli = f.metadata["cli"]
        flag = cli["flag"] or "--" + path[-1].replace("_", "-")
        kwargs: dict[str, Any] = {"dest": _DEST + ".".join(path), "default": argparse.SUPPRESS,
                                  "help": cli["help"] + _default_text(f)}  # fmt: skip
        scalar = _scalar_type(hint)
        if hint is bool:
            kwargs["action"] = "store_true"
        else:
            if cli["parse"] is not None:
                kwargs["type"] = _argparse_type(cli["parse"])
            elif isinstance(scalar, type) and issubclass(scalar, enum.Enum):
                kwargs["choices"] = [member.value for member in scalar]
                kwargs["type"] = str.lower  # as the enumeration's own parse: case does not matter
            else:
                kwargs["type"] = scalar
            if cli["nargs"] is not None:
                kwargs["nargs"] = cli["nargs"]
            if "choices" not in kwargs:
                kwargs["metavar"] = cli["metavar"] or path[-1].upper()
            if cli["repeat"]:
                kwargs["action"] = "append"
            if cli["required"]:
                kwargs["required"] = True
        parser.add_argument(flag, **kwargs)


def options_to_dict(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The options given on the command line as the nested JSON object of ``cls`` (absent ones left out)."""
    out: dict[str, Any] = {}
    for path, f, _hint in _optioned_fields(cls):
        key = _DEST + ".".join(path)
        if not hasattr(args, key):
            continue
        value = getattr(args, key)
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        pair = f.metadata["cli"]["pair"]
        if pair is not None:  # one option, two fields
            node[path[-1]], node[pair] = value
        else:
            node[path[-1]] = list(value) if isinstance(value, tuple) else value
    return out


__all__ = ["add_options", "options_to_dict"]
