"""Real MRML (``slicer-core``) for the Slicer-side code: the module folder on ``sys.path``, and the
segmentation converter rules that Slicer's Segmentations module registers at application start."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parents[4] / "SAMTune"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))


@pytest.fixture(scope="session", autouse=True)
def segmentation_converters():
    import slicer

    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    if not factory.GetConverterRules():
        for rule in (
            slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule,
            slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule,
        ):
            factory.RegisterConverterRule(rule())
    return factory


@pytest.fixture
def scene():
    import slicer

    return slicer.vtkMRMLScene()
