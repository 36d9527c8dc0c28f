"""The Slicer extension description files agree with each other and list every shipped file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
MODULE = ROOT / "SAMTune"


def cmake_set(text: str, name: str) -> str:
    match = re.search(rf'set\({name}\s+"([^"]*)"\)', text)
    assert match, f"{name} not set in CMakeLists.txt"
    return match.group(1)


def cmake_list(text: str, name: str) -> list[str]:
    match = re.search(rf"set\({name}\s+(.*?)\)", text, re.S)
    assert match, f"{name} not set"
    module = re.search(r"set\(MODULE_NAME (\w+)\)", text)
    return [entry.replace("${MODULE_NAME}", module.group(1) if module else "") for entry in match.group(1).split()]


def s4ext_fields() -> dict[str, str]:
    fields = {}
    for line in (ROOT / "SAMTune.s4ext").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            fields[key] = value.strip()
    return fields


def test_extension_metadata_agrees_across_cmake_s4ext_and_json() -> None:
    cmake = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    s4ext = s4ext_fields()
    catalog = json.loads((ROOT / "SAMTune.json").read_text(encoding="utf-8"))

    assert cmake_set(cmake, "EXTENSION_DEPENDS") == "PyTorch"
    assert s4ext["depends"] == "PyTorch"
    assert catalog["build_dependencies"] == ["PyTorch"]

    category = cmake_set(cmake, "EXTENSION_CATEGORY")
    assert category == "Segmentation" == s4ext["category"] == catalog["category"]
    assert cmake_set(cmake, "EXTENSION_HOMEPAGE") == s4ext["homepage"]
    assert cmake_set(cmake, "EXTENSION_DESCRIPTION") == s4ext["description"]
    assert cmake_set(cmake, "EXTENSION_ICONURL") == s4ext["iconurl"]
    assert cmake_set(cmake, "EXTENSION_CONTRIBUTORS") == s4ext["contributors"]
    assert s4ext["scmurl"] == catalog["scm_url"]
    assert s4ext["scm"] == catalog.get("scm_type", "git") == "git"
    assert catalog["$schema"].startswith("https://raw.githubusercontent.com/Slicer/Slicer/")
    assert {"$schema", "category", "scm_url"} <= set(catalog)
    assert "add_subdirectory(SAMTune)" in cmake
    minimum = cmake_set(cmake, "SAMTUNE_MINIMUM_SLICER_VERSION")  # stated in the description and the README
    assert f"3D Slicer {minimum.rsplit('.', 1)[0]} or later" in s4ext["description"]
    assert f"3D Slicer {minimum.rsplit('.', 1)[0]} or later" in (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("module", ["SAMTune", "SegmentEditorSAMAuto"])
def test_module_cmake_lists_every_script_and_resource(module: str) -> None:
    folder = ROOT / module
    text = (folder / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "slicerMacroBuildScriptedModule" in text
    assert "WITH_GENERIC_TESTS" in text
    assert f"add_subdirectory({module})" in (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    listed = set(cmake_list(text, "MODULE_PYTHON_SCRIPTS"))
    listed |= set(cmake_list(text, "MODULE_PYTHON_RESOURCES"))
    files = [
        p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.name != "CMakeLists.txt"
    ]
    on_disk = {p.relative_to(folder).as_posix() for p in files}
    assert not sorted(on_disk - listed), f"add to {module}/CMakeLists.txt: {sorted(on_disk - listed)}"
    assert not sorted(listed - on_disk), (
        f"listed in {module}/CMakeLists.txt but not on disk: {sorted(listed - on_disk)}"
    )


def test_license_is_apache_2() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0" in text


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in readme
    assert re.search(r"^make test$", ci, re.M)


def test_presets_ship_inside_the_package_for_the_wheel_and_the_extension(monkeypatch) -> None:
    import tomllib

    from samtune.train.presets import list_presets, presets_dir

    monkeypatch.delenv("SAMTUNE_PRESETS_DIR", raising=False)
    folder = presets_dir()
    files = sorted(p.name for p in folder.glob("*.json"))
    assert folder == ROOT / "SAMTune" / "Logic" / "samtune" / "train" / "presets"
    assert [p.name + ".json" for p in list_presets()] == files and "cpu_quick.json" in files
    # the wheel takes them as package data; the extension lists them as module resources
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert data["tool"]["setuptools"]["package-data"]["samtune.train.presets"] == ["*.json"]
    resources = cmake_list((ROOT / "SAMTune" / "CMakeLists.txt").read_text(encoding="utf-8"), "MODULE_PYTHON_RESOURCES")
    assert {f"Logic/samtune/train/presets/{name}" for name in files} <= set(resources)
