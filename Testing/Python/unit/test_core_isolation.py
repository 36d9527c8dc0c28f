"""The core package never imports Slicer, Qt, CTK or VTK (house rule 1)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

from import_probe import BLOCKER

import samtune

BLOCKED = ("slicer", "qt", "ctk", "vtk", "PySide6", "PyQt5", "PythonQt")

_PROBE = (
    BLOCKER
    + r"""
import pkgutil
import samtune
names = [m.name for m in pkgutil.walk_packages(samtune.__path__, "samtune.")]
names = [n for n in names if not n.endswith("__main__")]  # the entry point runs the CLI
for name in names:
    importlib.import_module(name)
print(len(names))
"""
)


def all_submodules() -> list[str]:
    names = [m.name for m in pkgutil.walk_packages(samtune.__path__, "samtune.")]
    return [n for n in names if not n.endswith("__main__")]


def test_every_submodule_imports_with_gui_libraries_blocked() -> None:
    code = _PROBE.format(blocked=BLOCKED)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) == len(all_submodules())


def test_blocker_catches_a_forbidden_import(tmp_path: Path) -> None:
    # The probe must be able to fail: a module that imports vtk is rejected.
    package = tmp_path / "badpkg"
    package.mkdir()
    (package / "__init__.py").write_text("import vtk\n")
    code = _PROBE.format(blocked=BLOCKED).replace("import samtune", "import badpkg as samtune")
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode != 0
    assert "blocked import of vtk" in result.stderr


def test_no_gui_import_statement_in_core_sources() -> None:
    root = Path(samtune.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            stripped = line.strip()
            for name in BLOCKED:
                if stripped.startswith((f"import {name}", f"from {name} ")) or stripped.startswith(f"from {name}."):
                    offenders.append(f"{path}:{number}: {stripped}")
    assert offenders == []
