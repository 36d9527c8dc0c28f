"""The module's .ui (real Qt, offscreen), its parameter-node bindings, and the Slicer-side files."""

from __future__ import annotations

import ast
import py_compile
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
MODULE = ROOT / "SAMTune"
UI = MODULE / "Resources" / "UI" / "SAMTune.ui"
CODE = MODULE / "SAMTune.py"
EFFECT = ROOT / "SegmentEditorSAMAuto" / "SegmentEditorSAMAutoLib"
#: The panel's code: the module file and the panel sections it mixes in (SAMTuneLib/*Panel.py).
PANEL_CODE = (CODE, *sorted((MODULE / "SAMTuneLib").glob("*Panel.py")))
#: (.ui file, the code that loads it and refers to its widgets as self.ui.<name>)
PANELS = [(UI, PANEL_CODE), (EFFECT / "SAMAutoOptions.ui", (EFFECT / "SegmentEditorEffect.py",))]

#: Widget class -> parameter types Slicer's parameterNodeWrapper GUI connectors bind it to
#: (Base/Python/slicer/parameterNodeWrapper/guiConnectors.py).
CONNECTORS = {
    "QSpinBox": {"int"},
    "QDoubleSpinBox": {"float"},
    "QLineEdit": {"str"},
    "QCheckBox": {"bool"},
    "qMRMLNodeComboBox": {"node"},
}


def _load(ui: Path) -> set[str]:
    from PySide6.QtCore import QFile
    from PySide6.QtUiTools import QUiLoader
    from PySide6.QtWidgets import QApplication, QWidget

    app = QApplication.instance() or QApplication([])
    handle = QFile(str(ui))
    assert handle.open(QFile.OpenModeFlag.ReadOnly)
    root = QUiLoader().load(handle)
    handle.close()
    assert root is not None, f"QUiLoader could not load {ui.name}"
    names = {w.objectName() for w in root.findChildren(QWidget)} | {root.objectName()}
    root.deleteLater()
    app.processEvents()
    return names


def _parameter_fields() -> dict[str, str]:
    cls = _named(CODE, "SAMTuneParameterNode")
    assert any(ast.unparse(d) == "parameterNodeWrapper" for d in cls.decorator_list)
    fields = {}
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            text = ast.unparse(node.annotation)
            kind = "node" if "vtkMRML" in text else next(t for t in ("int", "float", "str", "bool") if t in text)
            fields[node.target.id] = kind
    return fields


@pytest.mark.parametrize(("ui", "code"), PANELS, ids=["module", "effect"])
def test_every_widget_the_code_uses_exists_in_the_ui(ui: Path, code: tuple[Path, ...]):
    used = set(re.findall(r"self\.ui\.(\w+)", "".join(path.read_text(encoding="utf-8") for path in code)))
    assert len(used) > 12
    assert sorted(used - _load(ui)) == []


def test_every_parameter_binding_names_a_field_of_a_bindable_type():
    fields = _parameter_fields()
    bound = {}
    for widget in ET.parse(UI).iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.findtext("string")] = widget.get("class")
    assert len(bound) >= 9
    for name, widget_class in bound.items():
        assert name in fields, f"{name} is bound in the .ui but is no field of SAMTuneParameterNode"
        assert fields[name] in CONNECTORS[widget_class], f"{widget_class} cannot represent {name}: {fields[name]}"


@pytest.mark.parametrize("ui", [UI, PANELS[1][0]], ids=["module", "effect"])
def test_the_ui_is_translatable_and_has_no_duplicate_names(ui: Path):
    names = [w.get("name") for w in ET.parse(ui).iter("widget")]
    assert len(names) == len(set(names))
    for string in ET.parse(ui).iter("string"):
        assert string.get("notr") != "true"


def test_slicer_side_files_compile():
    effect_files = sorted((ROOT / "SegmentEditorSAMAuto").rglob("*.py"))
    for path in [CODE, *sorted((MODULE / "SAMTuneLib").glob("*.py")), *effect_files]:
        py_compile.compile(str(path), doraise=True)


def _defaults(node: ast.ClassDef | ast.FunctionDef) -> dict[str, object]:
    """Literal defaults of a class's annotated fields or of a function's arguments."""
    if isinstance(node, ast.ClassDef):
        pairs = [(n.target.id, n.value) for n in node.body if isinstance(n, ast.AnnAssign) and n.value is not None]
    else:  # positional defaults belong to the last positional arguments
        args = node.args
        given = [*zip(args.args[::-1], args.defaults[::-1]), *zip(args.kwonlyargs, args.kw_defaults)]
        pairs = [(a.arg, v) for a, v in given if v is not None]
    return {name: value.value for name, value in pairs if isinstance(value, ast.Constant)}


def _named(path: Path, name: str, within: str | None = None) -> ast.ClassDef | ast.FunctionDef:
    """The class ``name`` of ``path``, or with ``within`` the method ``name`` of class ``within``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    scope = tree.body if within is None else _named(path, within).body
    kind = ast.ClassDef if within is None else ast.FunctionDef
    [node] = [n for n in scope if isinstance(n, kind) and n.name == name]
    return node


def test_a_fresh_panel_shows_the_default_presets_own_values():
    # An untouched panel sends only what differs from its preset, so its fields must start at that preset's values.
    from samtune.train import load_preset

    fields = _defaults(_named(CODE, "SAMTuneParameterNode"))
    config = load_preset(str(fields["preset"])).train_config()
    shown = {name: fields[name] for name in ("epochs", "batchSize", "learningRate", "validationFraction", "seed",
                                             "backbone", "device")}  # fmt: skip
    assert shown == {"epochs": config.epochs, "batchSize": config.batch_size, "learningRate": config.lr,
                     "validationFraction": config.val_fraction, "seed": config.seed, "backbone": config.backbone,
                     "device": config.device}  # fmt: skip
    # the console's logic.train and the job runner default to the same preset
    assert _defaults(_named(CODE, "train", within="SAMTuneLogic"))["preset"] == fields["preset"]
    jobs = MODULE / "SAMTuneLib" / "Jobs.py"
    assert _defaults(_named(jobs, "train", within="JobRunner"))["preset"] == fields["preset"]
