"""JSON round trip of configuration dataclasses; unknown keys are rejected by name."""

from __future__ import annotations

import ast
import copy
import dataclasses
import enum
import math
import sys
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from samtune.errors import ConfigurationError, did_you_mean

T = TypeVar("T")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) configuration dataclass; tuples become lists."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, enum.Enum):
            return value.value
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(config)  # type: ignore[no-any-return]


_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "a text", dict: "a JSON object",
          list: "a list", tuple: "a list", type(None): "null"}  # fmt: skip


def _describe(value: Any) -> str:
    return f"{value!r} ({'text' if isinstance(value, str) else type(value).__name__})"


def check_value(value: Any, hint: Any, path: str) -> None:
    """Check a JSON value against a field's type hint (the simple types configurations use).

    ``float`` accepts whole numbers; numbers must be finite (``NaN`` and infinities are refused);
    ``bool`` is not taken for a number. Hints it does not know (``Any``, classes) pass.

    Raises:
        ConfigurationError: The value has another type, naming the key, the value and what is expected.
    """
    origin = typing.get_origin(hint)
    if origin in (typing.Union, getattr(types, "UnionType", typing.Union)):
        options = typing.get_args(hint)
        problems = []
        for option in options:
            try:
                check_value(value, option, path)
                return
            except ConfigurationError as error:
                problems.append(error)
        real = [o for o in options if o is not type(None)]
        if value is not None and len(real) == 1 and len(problems) == len(options):  # `X | None`: say what X wants
            raise problems[options.index(real[0])]
        wanted = " or ".join(_NAMES.get(typing.get_origin(o) or o, getattr(o, "__name__", str(o))) for o in options)
        raise ConfigurationError(f"'{path}' must be {wanted}, got {_describe(value)}.")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigurationError(f"'{path}' must be a list, got {_describe(value)}.")
        args = typing.get_args(hint)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigurationError(f"'{path}' must be a list of {len(args)} values, got {_describe(value)}.")
            for n, (item, item_hint) in enumerate(zip(value, args)):
                check_value(item, item_hint, f"{path}[{n}]")
        elif args:
            for n, item in enumerate(value):
                check_value(item, args[0], f"{path}[{n}]")
        return
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, (dict, hint)):
            raise ConfigurationError(f"'{path}' must be a JSON object, got {_describe(value)}.")
        return
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigurationError(f"'{path}' must be a JSON object, got {_describe(value)}.")
        return
    if hint is type(None):
        if value is not None:
            raise ConfigurationError(f"'{path}' must be null, got {_describe(value)}.")
        return
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigurationError(f"'{path}' must be true or false, got {_describe(value)}.")
        return
    if hint in (int, float):
        numeric = (int, float) if hint is float else (int,)
        if isinstance(value, bool) or not isinstance(value, numeric):
            raise ConfigurationError(f"'{path}' must be {_NAMES[hint]}, got {_describe(value)}.")
        if not math.isfinite(value):
            raise ConfigurationError(f"'{path}' must be a finite number, got {value!r}.")
        return
    if hint is str and not isinstance(value, str):
        raise ConfigurationError(f"'{path}' must be a text, got {_describe(value)}.")


class _UnionsAsTyping(ast.NodeTransformer):
    """``A | B`` -> ``Union[A, B]`` in an annotation, so that Python 3.9 can evaluate it."""

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:  # noqa: N802 - the visitor's naming
        self.generic_visit(node)
        if not isinstance(node.op, ast.BitOr):
            return node
        return ast.Subscript(
            value=ast.Name(id="__samtune_union__", ctx=ast.Load()),
            slice=ast.Tuple(elts=[node.left, node.right], ctx=ast.Load()),  # type: ignore[arg-type]
            ctx=ast.Load(),
        )


def field_types(cls: type) -> dict[str, Any]:
    """The evaluated type hints of a configuration dataclass, on every supported Python.

    ``typing.get_type_hints`` cannot evaluate ``X | None`` before Python 3.10 (Slicer 5.8 runs 3.9);
    there each annotation is rewritten to ``typing.Union[...]`` first, so the type checks of
    :func:`config_from_dict` and the generated command-line options work the same on 3.9.
    """
    try:
        return typing.get_type_hints(cls)
    except TypeError:
        pass
    hints: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        namespace = dict(vars(sys.modules[klass.__module__])) if klass.__module__ in sys.modules else {}
        namespace["__samtune_union__"] = typing.Union
        for name, annotation in vars(klass).get("__annotations__", {}).items():
            if isinstance(annotation, str):
                tree = ast.fix_missing_locations(_UnionsAsTyping().visit(ast.parse(annotation, mode="eval")))
                annotation = eval(compile(tree, f"<annotation of {klass.__name__}.{name}>", "eval"), namespace)  # noqa: S307
            hints[name] = annotation
    return hints


def _nested_class(hint: Any, value: Any) -> Any:
    """The dataclass a JSON object stands for under ``hint`` (also ``Config | None``), else ``hint``."""
    if isinstance(value, dict) and typing.get_origin(hint) in (typing.Union, getattr(types, "UnionType", None)):
        classes = [a for a in typing.get_args(hint) if isinstance(a, type) and dataclasses.is_dataclass(a)]
        if len(classes) == 1:
            return classes[0]
    return hint


def config_from_dict(cls: type[T], data: dict[str, Any], *, where: str = "") -> T:
    """Build ``cls`` from ``data``, recursing into nested dataclass fields.

    Raises:
        ConfigurationError: A key that ``cls`` does not have (named, with the nearest valid key), a
            value of the wrong type or a non-finite number (:func:`check_value`, with the hints of
            :func:`field_types`), or a value the dataclass rejects.
    """
    if not isinstance(data, dict):
        raise ConfigurationError(f"Expected a JSON object for {where or cls.__name__}, got {type(data).__name__}.")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    try:
        hints = field_types(cls)
    except NameError:  # a name the annotations use is not importable where the class lives
        hints = {}
    kwargs: dict[str, Any] = {}
    in_file = where.endswith(".json")  # a job or card file: name the key alone, then the file
    for key, value in data.items():
        path = key if in_file or not where else f"{where}.{key}"
        if key not in fields:
            raise ConfigurationError(
                f"Unknown configuration key '{path}'.{did_you_mean(key, fields)} "
                f"Valid keys: {', '.join(sorted(fields))}."
            )
        hint = _nested_class(hints.get(key), value)
        if hint is not None:
            try:
                check_value(value, hint, path)
            except ConfigurationError as error:
                raise ConfigurationError(f"{error} (in '{where}')" if in_file else str(error)) from None
        if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = config_from_dict(hint, value, where=path)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as error:
        raise ConfigurationError(f"Invalid configuration for {where or cls.__name__}: {error}") from error


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,  # noqa: A002 - argparse's word
    flag: str | None = None,
    metavar: str | tuple[str, ...] | None = None,
    nargs: int | None = None,
    parse: Callable[[str], Any] | None = None,
    repeat: bool = False,
    pair: str | None = None,
    required: bool = False,
    default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
) -> Any:
    """A configuration field that is also a command-line option, declared once with its help text.

    :func:`samtune.cli.options.add_options` turns every such field of a dataclass (nested ones
    included) into an option: ``--field-name`` unless ``flag`` says otherwise, ``store_true`` for a
    boolean, choices for an enumeration, ``nargs`` values, ``repeat`` to give it more than once,
    ``parse`` to read the text, and ``pair`` to fill this field and the named one from two values.
    """
    cli = {"help": help, "flag": flag, "metavar": metavar, "nargs": nargs, "parse": parse, "repeat": repeat,
           "pair": pair, "required": required}  # fmt: skip
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"cli": cli})


def merge_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into a copy of ``base`` (nested dicts merge, other values replace)."""
    out = copy.deepcopy(base)  # the result shares nothing with its inputs
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_overrides(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
