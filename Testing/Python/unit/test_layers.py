"""Layers point one way (docs/architecture.md): no module of the core imports a module of a layer above it.

Every import statement counts, those inside functions too (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import samtune

ROOT = Path(samtune.__file__).parent

#: Bottom to top; a module may import its own layer and the layers below it.
LAYERS: list[tuple[str, ...]] = [
    (
        "samtune",
        "samtune._lazy",
        "samtune.errors",
        "samtune.enums",
        "samtune.config_io",
        "samtune.paths",
        "samtune.atomic",
        "samtune.quiet",
        "samtune.privacy",
    ),  # fmt: skip
    ("samtune.data", "samtune.metrics"),
    ("samtune.models",),
    ("samtune.peft",),
    ("samtune.library",),
    ("samtune.predict", "samtune.train", "samtune.evaluate"),
    ("samtune.worker",),
    ("samtune.cli", "samtune.__main__"),
]


def layer_of(module: str) -> int:
    best, level = -1, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, level = len(prefix), index
    assert level >= 0, f"{module} is in no layer: add it to LAYERS and to docs/architecture.md"
    return level


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)  # `from samtune import worker`
    return {n for n in names if n == "samtune" or n.startswith("samtune.")}


def core_sources() -> dict[str, str]:
    return {module_name(p): p.read_text(encoding="utf-8") for p in sorted(ROOT.rglob("*.py"))}


def upward_imports(sources: dict[str, str]) -> list[str]:
    problems = []
    for module, source in sources.items():
        own = layer_of(module)
        for imported in sorted(imports_of(source)):
            if not imported.startswith("samtune.") and imported != "samtune":
                continue
            if layer_of(imported) > own:
                problems.append(f"{module} (layer {own}) imports {imported} (layer {layer_of(imported)})")
    return problems


def test_no_module_imports_a_layer_above_its_own() -> None:
    sources = core_sources()
    assert len(sources) > 80
    assert upward_imports(sources) == []


def test_the_check_sees_upward_imports_even_inside_functions() -> None:
    sources = {
        "samtune.data.formats": "def f():\n    from samtune.worker import jobs\n",
        "samtune.models.builders": "import samtune.train.config\n",
        "samtune.worker.jobs": "from samtune.predict.config import PredictConfig\n",  # downward: fine
    }
    assert upward_imports(sources) == [
        "samtune.data.formats (layer 1) imports samtune.worker (layer 6)",
        "samtune.data.formats (layer 1) imports samtune.worker.jobs (layer 6)",
        "samtune.models.builders (layer 2) imports samtune.train.config (layer 5)",
    ]


def test_no_core_file_is_over_400_lines() -> None:
    # docs/architecture.md: a file a newcomer can read in one sitting; split by concern when one grows past it
    sizes = {module: len(source.splitlines()) for module, source in core_sources().items()}
    assert {m: n for m, n in sizes.items() if n > 400} == {}
    assert max(sizes.values()) > 300  # the count is real
