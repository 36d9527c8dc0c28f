"""The correction loop below the GUI, on real MRML: corrected slices become training data slice by
slice (the rest of the volume is not ground truth), and a write can keep out of other segments."""

from __future__ import annotations

import numpy as np
import pytest
import slicer
from SAMTuneLib import Segments as segments
from SAMTuneLib import TrainingData as training
from test_mrml_bridge import add_segmentation, add_volume, ijk_to_ras, rotation

from samtune.data.image_io import read_label
from samtune.train.manifest import cases_from_manifest, read_manifest


@pytest.fixture
def volume(scene):
    rng = np.random.default_rng(3)
    array = rng.integers(0, 300, size=(8, 12, 14)).astype(np.int16)
    return add_volume(scene, array, ijk_to_ras((0.8, 0.8, 3.0), (5.0, -7.0, 20.0), rotation(15, 2)))


def test_corrected_slices_train_as_ground_truth_and_nothing_else(scene, volume, tmp_path):
    segmentation = add_segmentation(scene, volume)
    atrium = np.zeros((8, 12, 14), bool)
    atrium[2:6, 3:9, 4:10] = True  # what the model predicted and the user corrected, everywhere
    sid = segments.writeMaskToSegment(atrium, segmentation, volume, name="atrium")
    slices = training.correctionSlices(volume, [5, 3, 7, 3], axis=0)
    assert slices == [3, 5, 7]  # sorted, once each
    case = training.CaseNodes(volume, segmentation, [sid], caseId="heart-corrections", slices=slices, axis=0)
    cells, status, _ = training.caseRow(case)
    assert status.ok and cells[3] == "3 / 8"
    manifest = training.exportTrainingSet([case], str(tmp_path / "set"))
    (entry,) = read_manifest(manifest)
    assert entry["empty_slices"] == [7] and not entry["fully_labelled"]  # slice 7 corrected to "absent"
    label = read_label(entry["label"]).array
    assert label[[3, 5]].any() and not label[[0, 1, 2, 4, 6, 7]].any()  # only the corrected slices carry labels
    np.testing.assert_array_equal(label[3] > 0, atrium[3])
    (loaded,) = cases_from_manifest(manifest)
    assert loaded.empty_slices == [7]


def test_corrections_along_another_axis_or_off_the_volume_are_refused(volume):
    with pytest.raises(
        ValueError, match=r"along the axis training slices .* along \(k \(axial\)\).*i \(sagittal\) view"
    ):
        training.correctionSlices(volume, [2], axis=2)
    with pytest.raises(ValueError, match=r"0\.\.7"):
        training.correctionSlices(volume, [8], axis=0)
    with pytest.raises(ValueError, match="none"):
        training.correctionSlices(volume, [], axis=0)


def test_a_write_keeps_out_of_the_other_segments_it_is_told_to(scene, volume):
    segmentation = add_segmentation(scene, volume)
    shape = (8, 12, 14)
    lung, bone, target = (np.zeros(shape, bool) for _ in range(3))
    lung[3, 0:6, 0:7] = True
    bone[3, 6:12, 7:14] = True
    target[3, 2:4, 2:4] = True
    lung_id = segments.writeMaskToSegment(lung, segmentation, volume, name="lung")
    bone_id = segments.writeMaskToSegment(bone, segmentation, volume, name="bone")
    target_id = segments.writeMaskToSegment(target, segmentation, volume, name="target")
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    logic.SetSegmentStatus(segmentation.GetSegmentation().GetSegment(bone_id), logic.Completed)
    segmentation.CreateDefaultDisplayNodes()
    segmentation.GetDisplayNode().SetSegmentVisibility(lung_id, False)
    predicted = np.zeros(shape, bool)
    predicted[3, 1:11, 1:13] = True  # spills over both neighbours
    expected = {
        "none": predicted,
        "all": (predicted & ~lung & ~bone) | target,
        "visible": (predicted & ~bone) | target,  # the lung is hidden
        "completed": (predicted & ~bone) | target,  # the bone is marked completed
    }
    for protect, want in expected.items():
        segments.writeMaskToSegment(target, segmentation, volume, segmentId=target_id)  # back to the user's segment
        segments.writeMaskToSegment(predicted, segmentation, volume, segmentId=target_id, mode="add", protect=protect)
        np.testing.assert_array_equal(
            segments.segmentMask(segmentation, target_id, volume), want | target, err_msg=protect
        )
        np.testing.assert_array_equal(segments.segmentMask(segmentation, lung_id, volume), lung, err_msg=protect)
        np.testing.assert_array_equal(segments.segmentMask(segmentation, bone_id, volume), bone, err_msg=protect)
    kept = segments.protectedMask(segmentation, target_id, volume, "all")
    np.testing.assert_array_equal(kept, lung | bone)
    np.testing.assert_array_equal(
        segments.combineWithSegment(predicted, target, "intersect", kept), predicted & target & ~kept | (target & kept)
    )
    with pytest.raises(ValueError, match="Unknown choice"):
        segments.protectedMask(segmentation, target_id, volume, "locked")
