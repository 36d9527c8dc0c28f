"""Writing only some slices of a segment (the effect's preview) on real MRML: in place, per run of
consecutive slices, every other slice kept; the full write where the in-place one is not safe."""

from __future__ import annotations

import numpy as np
import pytest
import slicer
import vtk
from SAMTuneLib import Segments as segments
from test_mrml_bridge import add_volume, ijk_to_ras, rotation

SHAPE = (7, 9, 11)  # (K, J, I): a different size along each axis


@pytest.fixture
def volume(scene):
    """Anisotropic, rotated and shifted: slices along each axis have their own shape and spacing."""
    matrix = ijk_to_ras((0.8, 1.3, 3.0), (-20.0, 15.0, 40.0), rotation(25, 2) @ rotation(-15, 0))
    return add_volume(scene, np.zeros(SHAPE, dtype=np.int16), matrix)


@pytest.fixture
def full_writes(monkeypatch):
    """Counts the whole-segment writes that :func:`writeSlicesToSegment` falls back to."""
    calls = []
    original = segments.writeMaskToSegment

    def spy(mask, *args, **kwargs):
        calls.append(np.array(mask, copy=True))
        return original(mask, *args, **kwargs)

    monkeypatch.setattr(segments, "writeMaskToSegment", spy)
    return calls


def blob(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(SHAPE) > 0.6


def new_slices(axis: int, indices, seed: int) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    plane = tuple(size for a, size in enumerate(SHAPE) if a != axis)
    return {index: rng.random(plane) > 0.5 for index in indices}


def expected_after(before: np.ndarray, masks: dict[int, np.ndarray], axis: int) -> np.ndarray:
    after = before.copy()
    for index, mask in masks.items():
        np.moveaxis(after, axis, 0)[index] = mask
    return after


def assert_slices(result: np.ndarray, before: np.ndarray, masks: dict[int, np.ndarray], axis: int) -> None:
    moved_result, moved_before = np.moveaxis(result, axis, 0), np.moveaxis(before, axis, 0)
    for index in range(SHAPE[axis]):
        wanted = masks[index] if index in masks else moved_before[index]
        assert np.array_equal(moved_result[index], wanted), f"slice {index} along axis {axis}"


@pytest.mark.parametrize("axis", [0, 1, 2], ids=["k", "j", "i"])
@pytest.mark.parametrize("indices", [(3,), (1, 4), (0, 1, 2, 5)], ids=["one", "two apart", "run and one"])
def test_only_the_given_slices_change(scene, volume, full_writes, axis, indices):
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "preview")
    before = blob(axis)
    segment = segments.writeMaskToSegment(before, segmentation, volume, name="preview")
    full_writes.clear()
    masks = new_slices(axis, indices, seed=10 + axis)
    assert all(not np.array_equal(m, np.moveaxis(before, axis, 0)[i]) for i, m in masks.items())  # a real change
    assert segments.writeSlicesToSegment(masks, axis, segmentation, volume, name="preview") == segment
    assert full_writes == []  # written in place, slab by slab
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 1
    assert_slices(segments.segmentMask(segmentation, segment, volume), before, masks, axis)


@pytest.mark.parametrize("axis", [0, 1, 2], ids=["k", "j", "i"])
def test_a_slice_cleared_to_empty_and_slices_outside_the_segments_extent(scene, volume, full_writes, axis):
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "preview")
    before = np.zeros(SHAPE, dtype=bool)
    inner = [slice(2, -2)] * 3
    before[tuple(inner)] = blob(axis)[tuple(inner)]  # the segment's labelmap shrinks to this box
    segment = segments.writeMaskToSegment(before, segmentation, volume, name="preview")
    full_writes.clear()
    cleared, edge = 3, SHAPE[axis] - 1
    masks = new_slices(axis, (0, edge), seed=axis)  # slices beyond the segment's current extent
    masks[cleared] = np.zeros_like(masks[0])
    segments.writeSlicesToSegment(masks, axis, segmentation, volume, name="preview")
    assert full_writes == []
    result = segments.segmentMask(segmentation, segment, volume)
    assert not np.moveaxis(result, axis, 0)[cleared].any()
    assert_slices(result, before, masks, axis)


def test_repeated_edits_accumulate_like_the_full_mask(scene, volume, full_writes):
    """What the prompted preview does: click after click on different slices and axes."""
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "preview")
    expected = blob(1)
    segment = segments.writeMaskToSegment(expected, segmentation, volume, name="preview")
    full_writes.clear()
    for step, (axis, indices) in enumerate([(0, (2,)), (2, (7, 8)), (1, (0, 8)), (0, (2, 3)), (2, (0,))]):
        masks = new_slices(axis, indices, seed=100 + step)
        segments.writeSlicesToSegment(masks, axis, segmentation, volume, name="preview")
        expected = expected_after(expected, masks, axis)
        assert np.array_equal(segments.segmentMask(segmentation, segment, volume), expected), f"step {step}"
    assert full_writes == []


def test_a_segment_sharing_its_labelmap_keeps_its_label_and_its_neighbour(scene, volume, full_writes):
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    other_mask, mine = np.zeros(SHAPE, dtype=bool), np.zeros(SHAPE, dtype=bool)
    other_mask[:, :4] = blob(2)[:, :4]
    mine[:, 5:] = blob(3)[:, 5:]
    other = segments.writeMaskToSegment(other_mask, segmentation, volume, name="other")
    segment = segments.writeMaskToSegment(mine, segmentation, volume, name="mine")
    segmentation.GetSegmentation().CollapseBinaryLabelmaps(False)  # one shared layer, label values 1 and 2
    layer = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
    seg = segmentation.GetSegmentation()
    assert seg.GetSegment(segment).GetRepresentation(layer) is seg.GetSegment(other).GetRepresentation(layer)
    assert seg.GetSegment(segment).GetLabelValue() != 1
    full_writes.clear()
    masks = {index: np.zeros(SHAPE[1:], dtype=bool) for index in (1, 2, 5)}
    for mask in masks.values():
        mask[5:, 2:9] = True  # inside 'mine' only: the shared layer stays shared
    segments.writeSlicesToSegment(masks, 0, segmentation, volume, name="mine")
    assert full_writes == []
    assert_slices(segments.segmentMask(segmentation, segment, volume), mine, masks, 0)
    assert np.array_equal(segments.segmentMask(segmentation, other, volume), other_mask)


def test_a_new_or_empty_segment_is_written_whole(scene, volume, full_writes):
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "preview")
    masks = new_slices(1, (2, 6), seed=4)
    segment = segments.writeSlicesToSegment(masks, 1, segmentation, volume, name="preview", color=(1, 1, 0))
    assert len(full_writes) == 1
    assert segmentation.GetSegmentation().GetSegment(segment).GetName() == "preview"
    assert segmentation.GetSegmentation().GetSegment(segment).GetColor() == (1, 1, 0)
    empty = np.zeros(SHAPE, dtype=bool)
    assert_slices(segments.segmentMask(segmentation, segment, volume), empty, masks, 1)
    alone = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "alone")
    cleared = alone.GetSegmentation().AddEmptySegment("", "cleared")  # its own layer, with no extent
    segments.writeSlicesToSegment(masks, 1, alone, volume, name="cleared")
    assert len(full_writes) == 2
    assert_slices(segments.segmentMask(alone, cleared, volume), empty, masks, 1)


def test_an_empty_segment_on_a_shared_layer_is_written_in_place(scene, volume, full_writes):
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    first = blob(11)
    other = segments.writeMaskToSegment(first, segmentation, volume, name="other")
    added = segmentation.GetSegmentation().AddEmptySegment("", "added")  # Slicer puts it on the existing layer
    full_writes.clear()
    masks = new_slices(2, (3, 4, 9), seed=12)
    segments.writeSlicesToSegment(masks, 2, segmentation, volume, name="added")
    assert full_writes == []
    assert_slices(segments.segmentMask(segmentation, added, volume), np.zeros(SHAPE, dtype=bool), masks, 2)
    assert np.array_equal(segments.segmentMask(segmentation, other, volume), first)


def test_under_a_transform_the_whole_segment_is_written(scene, volume, full_writes):
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "moved")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 4.0)
    matrix.SetElement(2, 3, -1.5)
    transform.SetMatrixTransformToParent(matrix)
    segmentation.SetAndObserveTransformNodeID(transform.GetID())
    before = blob(5)
    segment = segments.writeMaskToSegment(before, segmentation, volume, name="preview")
    full_writes.clear()
    masks = new_slices(2, (1, 6), seed=6)
    segments.writeSlicesToSegment(masks, 2, segmentation, volume, name="preview")
    assert len(full_writes) == 1 and np.array_equal(full_writes[0], expected_after(before, masks, 2))
    assert_slices(segments.segmentMask(segmentation, segment, volume), before, masks, 2)


def test_a_labelmap_on_another_lattice_is_written_whole(scene, volume, full_writes):
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "fine")
    segment = segmentation.GetSegmentation().AddEmptySegment("", "preview")
    fine = segments.maskToOrientedImage(np.zeros(SHAPE, dtype=bool), volume)
    matrix = vtk.vtkMatrix4x4()
    fine.GetImageToWorldMatrix(matrix)
    for r in range(3):  # half the spacing: each volume voxel is 2 x 2 x 2 fine voxels
        for c in range(3):
            matrix.SetElement(r, c, matrix.GetElement(r, c) / 2)
    fine.SetImageToWorldMatrix(matrix)
    fine.SetExtent(0, 2 * SHAPE[2] - 1, 0, 2 * SHAPE[1] - 1, 0, 2 * SHAPE[0] - 1)
    fine.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    fine.GetPointData().GetScalars().Fill(0)
    before = blob(7)
    segments.maskToModifierLabelmap(before, volume, segmentation, fine)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    assert logic.SetBinaryLabelmapToSegment(fine, segmentation, segment, logic.MODE_REPLACE, fine.GetExtent())
    assert np.array_equal(segments.segmentMask(segmentation, segment, volume), before)
    masks = new_slices(0, (0, 4), seed=8)
    segments.writeSlicesToSegment(masks, 0, segmentation, volume, name="preview")
    assert len(full_writes) == 1
    assert_slices(segments.segmentMask(segmentation, segment, volume), before, masks, 0)


def test_bad_slices_are_refused_before_anything_is_written(scene, volume):
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "preview")
    segment = segments.writeMaskToSegment(blob(9), segmentation, volume, name="preview")
    before = segments.segmentMask(segmentation, segment, volume)
    with pytest.raises(ValueError, match="outside volume"):
        segments.writeSlicesToSegment({SHAPE[0]: np.zeros(SHAPE[1:], bool)}, 0, segmentation, volume, name="preview")
    with pytest.raises(ValueError, match="shape"):
        segments.writeSlicesToSegment({1: np.zeros(SHAPE[1:], bool)}, 1, segmentation, volume, name="preview")
    assert np.array_equal(segments.segmentMask(segmentation, segment, volume), before)


def test_slice_runs():
    assert segments.sliceRuns([5, 0, 2, 1, 8, 7]) == [(0, 2), (5, 5), (7, 8)]
    assert segments.sliceRuns([]) == []
