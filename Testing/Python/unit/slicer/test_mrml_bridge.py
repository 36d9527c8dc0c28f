"""The MRML bridge on real MRML nodes (slicer-core): geometry, segment resampling, writing, undo, export."""

from __future__ import annotations

import numpy as np
import pytest
import slicer
import vtk
from SAMTuneLib import Geometry as geometry
from SAMTuneLib import Segments as segments
from SAMTuneLib import TrainingData as training
from vtk.util import numpy_support

from samtune.data.image_io import read_label, read_volume, write_volume
from samtune.data.volume import Volume
from samtune.train.manifest import cases_from_manifest, validate_manifest


def rotation(angle_deg: float, axis: int) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    c, s = np.cos(a), np.sin(a)
    r = np.eye(3)
    i, j = [(1, 2), (0, 2), (0, 1)][axis]
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def ijk_to_ras(spacing, origin, rot=None) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = (np.eye(3) if rot is None else rot) * np.asarray(spacing, dtype=float)[None, :]
    m[:3, 3] = origin
    return m


def add_volume(scene, array: np.ndarray, matrix: np.ndarray, name="vol", vector=False):
    node = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode" if vector else "vtkMRMLScalarVolumeNode", name)
    image = vtk.vtkImageData()
    k, j, i = array.shape[:3]
    image.SetDimensions(i, j, k)
    components = array.shape[3] if vector else 1
    vtk_type = numpy_support.get_vtk_array_type(array.dtype)
    image.AllocateScalars(vtk_type, components)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = array.reshape(-1, components).squeeze()
    node.SetAndObserveImageData(image)
    node.SetIJKToRASMatrix(geometry.numpyToMatrix(matrix))
    return node


def add_segmentation(scene, reference_volume, name="seg"):
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
    return node


@pytest.fixture
def oblique(scene):
    rng = np.random.default_rng(0)
    array = rng.integers(-100, 400, size=(6, 10, 12)).astype(np.int16)
    matrix = ijk_to_ras((0.7, 0.9, 2.5), (12.0, -30.0, 55.0), rotation(30, 2) @ rotation(-20, 0))
    return add_volume(scene, array, matrix), array, matrix


def test_volume_geometry_matches_slicers_own_nrrd_reader(scene, oblique, tmp_path):
    node, array, matrix = oblique
    volume = geometry.volumeToCore(node)
    np.testing.assert_array_equal(volume.array, array)
    np.testing.assert_allclose(geometry.ijkToRasFromGeometry(volume.geometry), matrix, atol=1e-9)
    # written by the core (SimpleITK, LPS) and read back by MRML's own storage node (RAS)
    path = write_volume(volume, tmp_path / "oblique.nrrd")
    loaded = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "loaded")
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(loaded)
    np.testing.assert_allclose(geometry.ijkToRasOfVolume(loaded), matrix, atol=1e-5)
    np.testing.assert_array_equal(geometry.volumeToCore(loaded).array, array)


def test_rgb_vector_volume_becomes_a_colour_image(scene):
    rgb = np.random.default_rng(1).integers(0, 255, size=(1, 9, 13, 3)).astype(np.uint8)
    node = add_volume(scene, rgb, ijk_to_ras((0.3, 0.3, 1.0), (0, 0, 0)), vector=True)
    volume = geometry.volumeToCore(node)
    assert volume.is_vector and volume.shape == (1, 9, 13)
    np.testing.assert_array_equal(volume.array, rgb)


def test_segment_on_a_finer_shifted_grid_is_resampled_onto_the_volume(scene, oblique):
    node, array, matrix = oblique
    # a finer grid (half spacing in i and j) whose voxel centres include every volume voxel centre
    fine_matrix = matrix.copy()
    fine_matrix[:3, 0] /= 2
    fine_matrix[:3, 1] /= 2
    fine_matrix[:3, 3] = matrix[:3, :3] @ np.array([-1.0, -1.0, 0.0]) + matrix[:3, 3]  # starts 1 voxel before
    fine = add_volume(scene, np.zeros((6, 24, 28), np.int16), fine_matrix, name="fine")
    segmentation = add_segmentation(scene, fine)
    fine_mask = np.zeros((6, 24, 28), bool)
    fine_mask[2:4, 6:13, 8:17] = True
    sid = segments.writeMaskToSegment(fine_mask, segmentation, fine, name="Atrium")
    mask = segments.segmentMask(segmentation, sid, node)
    # volume voxel (i, j) sits at fine voxel (2i + 2, 2j + 2)
    expected = fine_mask[:, 2 : 2 + 20 : 2, 2 : 2 + 24 : 2]
    assert mask.shape == array.shape
    np.testing.assert_array_equal(mask, expected)
    assert mask.sum() > 0


def test_several_segments_round_trip_with_names(scene, oblique):
    node, array, _ = oblique
    labels = np.zeros(array.shape, np.uint8)
    labels[1:3, 2:5, 2:6] = 1
    labels[3:5, 5:9, 6:11] = 2
    source = add_segmentation(scene, node, "source")
    ids = segments.writeLabelsToSegmentation(labels, {"Atrium": 1, "Ventricle": 2}, source, node)
    assert set(ids) == {"Atrium", "Ventricle"}
    assert segments.segmentIdsByName(source).keys() == {"Atrium", "Ventricle"}
    label, structures = segments.labelsFromSegments(source, [ids["Atrium"], ids["Ventricle"]], node)
    assert structures == {"Atrium": 1, "Ventricle": 2}
    np.testing.assert_array_equal(label.array, labels)
    assert label.geometry.is_close(geometry.volumeToCore(node).geometry)


def test_write_modes_and_undo_restore_the_users_segment(scene, oblique):
    node, array, _ = oblique
    segmentation = add_segmentation(scene, node)
    user = np.zeros(array.shape, bool)
    user[2, 2:6, 2:6] = True
    sid = segments.writeMaskToSegment(user, segmentation, node, name="Atrium")
    predicted = np.zeros(array.shape, bool)
    predicted[2, 4:8, 4:8] = True
    undo = segments.SegmentationUndo(segmentation)
    segments.writeMaskToSegment(predicted, segmentation, node, segmentId=sid, mode="add", undo=undo)
    np.testing.assert_array_equal(segments.segmentMask(segmentation, sid, node), user | predicted)
    segments.writeMaskToSegment(predicted, segmentation, node, segmentId=sid, mode="intersect", undo=undo)
    np.testing.assert_array_equal(segments.segmentMask(segmentation, sid, node), (user | predicted) & predicted)
    segments.writeMaskToSegment(predicted & False, segmentation, node, segmentId=sid, mode="replace", undo=undo)
    assert not segments.segmentMask(segmentation, sid, node).any()
    assert undo.canUndo and undo.undo() and undo.undo()
    np.testing.assert_array_equal(segments.segmentMask(segmentation, sid, node), user | predicted)
    assert undo.undo()
    np.testing.assert_array_equal(segments.segmentMask(segmentation, sid, node), user)
    with pytest.raises(ValueError, match="Write mode"):
        segments.writeMaskToSegment(user, segmentation, node, segmentId=sid, mode="xor")
    with pytest.raises(ValueError, match=r"shape \(2, 2, 2\)"):
        segments.writeMaskToSegment(np.ones((2, 2, 2), bool), segmentation, node, segmentId=sid)


def test_segmentation_under_a_transform_is_read_and_written_in_the_volumes_frame(scene):
    array = np.zeros((4, 8, 8), np.int16)
    node = add_volume(scene, array, ijk_to_ras((1.0, 1.0, 1.0), (0, 0, 0)))
    segmentation = add_segmentation(scene, node)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = np.eye(4)
    shift[0, 3] = 2.0  # segmentation moved 2 mm along R = +2 voxels along i
    transform.SetMatrixTransformToParent(geometry.numpyToMatrix(shift))
    segmentation.SetAndObserveTransformNodeID(transform.GetID())
    mask = np.zeros(array.shape, bool)
    mask[1, 3, 1:4] = True
    sid = segments.writeMaskToSegment(mask, segmentation, node, name="moved")
    np.testing.assert_array_equal(segments.segmentMask(segmentation, sid, node), mask)
    local = slicer.vtkOrientedImageData()
    segmentation.GetBinaryLabelmapRepresentation(sid, local)
    extent, to_local = local.GetExtent(), vtk.vtkMatrix4x4()
    local.GetImageToWorldMatrix(to_local)
    first, last = (geometry.matrixToNumpy(to_local) @ [i, 3, 1, 1] for i in (extent[0], extent[1]))
    assert (first[0], last[0]) == (-1.0, 1.0)  # R = 1..3 in the volume's frame is -1..1 in the segmentation's


def test_describe_case_counts_slices_and_names_problems(scene, oblique):
    node, array, _ = oblique
    segmentation = add_segmentation(scene, node)
    mask = np.zeros(array.shape, bool)
    mask[1, 2:4, 2:4] = mask[4, 2:4, 2:4] = True
    sid = segments.writeMaskToSegment(mask, segmentation, node, name="Atrium")
    empty = segmentation.GetSegmentation().AddEmptySegment("", "Empty", [1, 0, 0])
    sparse = training.describeCase(node, segmentation, [sid])
    assert sparse.ok and sparse.labelledSlices == 2 and sparse.totalSlices == 6  # k has the largest spacing
    assert sparse.foregroundVoxels == {"Atrium": 8}
    assert training.describeCase(node, segmentation, [sid], fullyLabelled=True).labelledSlices == 6
    problems = training.describeCase(node, segmentation, [sid, empty]).problems
    assert problems == ["Segment 'Empty' is empty: paint it on a few slices first."]
    assert training.describeCase(node, segmentation, []).problems == ["Choose the segment(s) to learn."]
    assert training.describeCase(None, segmentation, [sid]).problems == ["Choose both a volume and a segmentation."]
    far = add_volume(scene, array, ijk_to_ras((1, 1, 1), (500.0, 500.0, 500.0)), name="far")
    assert "geometry mismatch" in training.describeCase(far, segmentation, [sid]).problems[0]


def test_exported_training_set_is_a_valid_manifest_with_the_same_voxels(scene, oblique, tmp_path):
    node, array, _ = oblique
    segmentation = add_segmentation(scene, node)
    mask = np.zeros(array.shape, bool)
    mask[2:4, 3:7, 3:8] = True
    sid = segments.writeMaskToSegment(mask, segmentation, node, name="left atrium")
    cases = [
        training.CaseNodes(node, segmentation, [sid]),
        training.CaseNodes(node, segmentation, [sid], fullyLabelled=True),
    ]
    manifest = training.exportTrainingSet(cases, str(tmp_path / "export"))
    assert validate_manifest(manifest) == []
    loaded = cases_from_manifest(manifest)
    assert [c.case_id for c in loaded] == ["vol", "vol_2"]
    assert [c.fully_labelled for c in loaded] == [False, True]
    np.testing.assert_array_equal(loaded[0].image.array, array)
    np.testing.assert_array_equal(loaded[0].label.array == loaded[0].value, mask)
    assert loaded[0].structure == "left atrium"
    image = read_volume(tmp_path / "export" / "vol.nrrd")
    assert image.geometry.is_close(geometry.volumeToCore(node).geometry)
    assert read_label(tmp_path / "export" / "vol.seg.nrrd", reference=image).array.max() == 1
    with pytest.raises(ValueError, match="empty"):
        training.exportTrainingSet([], str(tmp_path / "none"))


def test_errors_name_the_problem(scene, oblique):
    node, _, _ = oblique
    with pytest.raises(ValueError, match="No volume selected"):
        geometry.volumeToCore(None)
    bare = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "bare")
    with pytest.raises(ValueError, match="'bare' has no image data"):
        geometry.volumeToCore(bare)
    segmentation = add_segmentation(scene, node)
    with pytest.raises(ValueError, match="has no segment 'nope'"):
        segments.segmentMask(segmentation, "nope", node)
    assert isinstance(geometry.volumeToCore(node), Volume)


def test_a_picture_loaded_as_a_vector_volume_segments_trains_and_exports_as_a_picture(scene, tmp_path):
    """A 768 x 560 RGB photograph as Slicer loads a PNG (a one-slice vector volume, LPS -> RAS flips, 2 mm
    pixels): the axial view cuts its only slice, a click maps into it, a prompted mask writes back into
    that slice, and the painted picture exports as a valid single-slice training case."""
    from samtune.data import make_picture_phantom
    from samtune.models import build_tiny_model
    from samtune.predict.session import PredictorSession

    picture, lesion = make_picture_phantom(size=(560, 768), seed=3)
    node = add_volume(scene, picture[None], np.diag([-2.0, -2.0, 1.0, 1.0]), name="photo", vector=True)
    volume = geometry.volumeToCore(node)
    assert volume.is_vector and volume.shape == (1, 560, 768)
    axial = np.eye(4)  # the Red view's SliceToRAS: normal along S
    assert geometry.sliceAxisOfView(node, axial) == 0
    rows, cols = np.nonzero(lesion)
    centre = (float(cols.mean()), float(rows.mean()), 0.0)
    ras = geometry.ijkToRas(node, centre)
    assert geometry.sliceIndexAt(node, ras, 0) == 0
    np.testing.assert_allclose(geometry.rasToIjk(node, ras), centre, atol=1e-6)
    session = PredictorSession(build_tiny_model("litemedsam", seed=0), volume, store=False)
    assert session.axis == 0  # a picture is one slice whatever its pixel spacing
    box = (cols.min(), rows.min(), 0, cols.max(), rows.max(), 0)
    index, mask = session.predict_ijk(box=box)
    assert index == 0 and mask.shape == (560, 768)
    segmentation = add_segmentation(scene, node)
    sid = segments.writeSlicesToSegment({0: mask}, 0, segmentation, node, name="lesion")
    np.testing.assert_array_equal(segments.segmentMask(segmentation, sid, node)[0], mask)
    painted = segments.writeMaskToSegment(lesion[None] > 0, segmentation, node, name="reference")
    manifest = training.exportTrainingSet([training.CaseNodes(node, segmentation, [painted], fullyLabelled=True)],
                                          str(tmp_path / "export"))  # fmt: skip
    assert validate_manifest(manifest) == []
    (case,) = cases_from_manifest(manifest)
    assert case.image.is_vector and case.image.shape == (1, 560, 768)
    np.testing.assert_array_equal(case.label.array[0] == case.value, lesion > 0)
