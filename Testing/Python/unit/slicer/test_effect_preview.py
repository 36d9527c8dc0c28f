"""The SAM auto effect's preview on real MRML: prompted clicks write only their slices into the preview
segment, which always shows what Apply would write; a finished job hands over its mask.

Only the Qt / Segment Editor glue is stubbed (``qt``, ``SegmentEditorEffects``, ``slicer.i18n``,
``slicer.mrmlScene``); the segmentations, the writes and the reads are Slicer's own.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import slicer
from SAMTuneLib import Segments as segments
from test_mrml_bridge import add_volume, ijk_to_ras, rotation

EFFECT = Path(__file__).resolve().parents[4] / "SegmentEditorSAMAuto" / "SegmentEditorSAMAutoLib"
SHAPE = (6, 8, 10)


class _Base:
    def __init__(self, scriptedEffect):
        self.scriptedEffect = scriptedEffect


@pytest.fixture
def effect(scene, monkeypatch):
    monkeypatch.setitem(sys.modules, "qt", types.ModuleType("qt"))
    editorEffects = types.SimpleNamespace(AbstractScriptedSegmentEditorEffect=_Base)
    monkeypatch.setitem(sys.modules, "SegmentEditorEffects", editorEffects)
    monkeypatch.setitem(sys.modules, "slicer.i18n", types.SimpleNamespace(tr=lambda text: text))
    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    spec = importlib.util.spec_from_file_location("samauto_effect_under_test", EFFECT / "SegmentEditorEffect.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    matrix = ijk_to_ras((0.9, 1.2, 2.5), (4.0, -6.0, 20.0), rotation(20, 2))
    volume = add_volume(scene, np.zeros(SHAPE, np.int16), matrix)
    parameters = types.SimpleNamespace(GetSourceVolumeNode=lambda: volume)
    instance = module.SegmentEditorEffect(types.SimpleNamespace(parameterSetNode=lambda: parameters))
    instance.ui = types.SimpleNamespace(modeComboBox=types.SimpleNamespace(currentData="prompted"),
                                        statusLabel=types.SimpleNamespace(text=""))  # fmt: skip
    instance.updateGui = lambda *args: None
    instance.volume = volume
    instance.module = module
    return instance


@pytest.fixture
def full_writes(monkeypatch):
    calls = []
    original = segments.writeMaskToSegment

    def spy(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(segments, "writeMaskToSegment", spy)
    return calls


def session(axis: int):
    return types.SimpleNamespace(volume=types.SimpleNamespace(shape=SHAPE), axis=axis)


def click(effect, axis: int, index: int, seed: int) -> dict[int, np.ndarray]:
    plane = tuple(size for a, size in enumerate(SHAPE) if a != axis)
    masks = {index: np.random.default_rng(seed).random(plane) > 0.5}
    effect.showPreview(masks, session(axis))
    return masks


def shown(effect) -> np.ndarray:
    node = effect.previewNode
    ids = segments.segmentIdsByName(node)
    assert list(ids) == [effect.module.PREVIEW_SEGMENT]  # one segment: the preview
    return segments.segmentMask(node, ids[effect.module.PREVIEW_SEGMENT], effect.volume)


def test_prompted_clicks_write_only_their_slices_and_show_what_apply_writes(effect, full_writes):
    expected = np.zeros(SHAPE, dtype=bool)
    for step, (axis, index) in enumerate([(0, 2), (0, 4), (2, 7), (1, 0), (0, 2)]):
        masks = click(effect, axis, index, seed=step)
        np.moveaxis(expected, axis, 0)[index] = masks[index]
        assert np.array_equal(effect.previewMask, expected), f"click {step}"
        assert np.array_equal(shown(effect), expected), f"click {step}"
    assert len(full_writes) == 1  # the first click; the others wrote their slice in place


def test_automatic_preview_replaces_what_was_shown(effect, full_writes):
    click(effect, 0, 1, seed=1)
    effect.ui.modeComboBox.currentData = "automatic"
    masks = click(effect, 1, 3, seed=2)
    expected = np.zeros(SHAPE, dtype=bool)
    expected[:, 3] = masks[3]
    assert np.array_equal(effect.previewMask, expected) and np.array_equal(shown(effect), expected)
    assert len(full_writes) == 2


def test_a_finished_job_hands_over_its_mask_and_clicks_then_edit_its_preview(effect, full_writes, monkeypatch):
    result = np.random.default_rng(3).random(SHAPE) > 0.7
    node = effect.clearedPreviewNode()
    segment = segments.writeMaskToSegment(result, node, effect.volume, name="atrium")
    full_writes.clear()
    finished = types.SimpleNamespace(state=types.SimpleNamespace(value="finished"))
    job = types.SimpleNamespace(mask=result, segmentationNode=node, segmentId=segment, error=None, result=finished)
    effect.job = job
    with monkeypatch.context() as patch:
        patch.setattr(segments, "segmentMask", None)  # nothing is read back from the segmentation
        effect.onJobDone(job)
    assert effect.previewMask is result and effect.job is None
    assert node.GetSegmentation().GetSegment(segment).GetName() == effect.module.PREVIEW_SEGMENT
    masks = click(effect, 2, 5, seed=4)
    expected = result.copy()
    expected[:, :, 5] = masks[5]
    assert np.array_equal(effect.previewMask, expected) and np.array_equal(shown(effect), expected)
    assert full_writes == []
