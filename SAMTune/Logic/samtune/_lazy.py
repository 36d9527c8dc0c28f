"""Lazy package exports (PEP 562), so that importing a package costs nothing until a name is used.

A package ``__init__`` lists its public names once, as ordinary imports inside an
``if TYPE_CHECKING:`` block (type checkers and readers see the real imports), and ends with::

    __getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)

:func:`lazy_exports` reads that block from the file and imports each submodule only when one of
its names is first asked for. This is what lets the Slicer module list presets and models before
torch is installed: no package ``__init__`` pulls in torch, SimpleITK or a model.
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Callable
from typing import Any


def _exports_of(path: str) -> dict[str, str]:
    """``{name: module}`` from the ``from module import name`` lines under ``if TYPE_CHECKING:``."""
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), filename=path)
    exports: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for statement in node.body:
                if isinstance(statement, ast.ImportFrom) and statement.module and statement.level == 0:
                    for alias in statement.names:
                        exports[alias.asname or alias.name] = statement.module
    return exports


def lazy_exports(package: str, path: str) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """Module ``__getattr__``, ``__dir__`` and ``__all__`` for ``package`` (its ``__init__`` at ``path``)."""
    exports = _exports_of(path)

    def __getattr__(name: str) -> Any:  # noqa: N807 - the PEP 562 hook's name
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)  # later look-ups skip this function
        return value

    def __dir__() -> list[str]:  # noqa: N807
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__, sorted(exports)
