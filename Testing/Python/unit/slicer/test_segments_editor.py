"""What the effect and the table need from real MRML: Apply through the editor's modifier on another grid
and under a transform, segments stored only as closed surfaces, rows that cannot be read, view axes."""

from __future__ import annotations

import numpy as np
import pytest
import slicer
import vtk
from SAMTuneLib import Geometry as geometry
from SAMTuneLib import Segments as segments
from SAMTuneLib import TrainingData as training
from test_mrml_bridge import add_volume, ijk_to_ras, rotation
from vtk.util import numpy_support


def modifier_like_the_editor(segmentation_node) -> slicer.vtkOrientedImageData:
    """What ``scriptedEffect.defaultModifierLabelmap()`` returns: an empty image on the segmentation's
    reference geometry (vtkSlicerSegmentEditorLogic::ResetModifierLabelmapToDefault)."""
    geometry_string = segmentation_node.GetSegmentation().GetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    )
    image = slicer.vtkOrientedImageData()
    assert slicer.vtkSegmentationConverter.DeserializeImageGeometry(
        geometry_string, image, True, vtk.VTK_UNSIGNED_CHAR, 1
    )
    image.GetPointData().GetScalars().Fill(0)
    return image


@pytest.fixture
def volume(scene):
    array = np.zeros((6, 12, 10), dtype=np.int16)
    return add_volume(scene, array, ijk_to_ras((1.0, 1.0, 2.0), (5.0, -3.0, 7.0)))


def segmentation_on_other_grid(scene, volume, transformed: bool):
    """A segmentation whose reference grid is half the volume's spacing and shifted, optionally under a transform."""
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    reference = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "fine")
    image = vtk.vtkImageData()
    image.SetDimensions(24, 28, 14)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    reference.SetAndObserveImageData(image)
    reference.SetIJKToRASMatrix(geometry.numpyToMatrix(ijk_to_ras((0.5, 0.5, 1.0), (3.0, -5.0, 5.0))))
    node.SetReferenceImageGeometryParameterFromVolumeNode(reference)
    if transformed:  # the segmentation sits 4 mm to the right of the volume's frame
        transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
        matrix = vtk.vtkMatrix4x4()
        matrix.SetElement(0, 3, 4.0)
        transform.SetMatrixTransformToParent(matrix)
        node.SetAndObserveTransformNodeID(transform.GetID())
    return node


@pytest.mark.parametrize("transformed", [False, True], ids=["other grid", "other grid under a transform"])
def test_apply_through_the_editors_modifier_lands_where_the_preview_was(scene, volume, transformed):
    segmentation = segmentation_on_other_grid(scene, volume, transformed)
    segment = segmentation.GetSegmentation().AddEmptySegment("", "atrium")
    mask = np.zeros((6, 12, 10), dtype=bool)
    mask[2:4, 3:8, 2:6] = True
    modifier = modifier_like_the_editor(segmentation)
    before = (modifier.GetDimensions(), modifier.GetSpacing())
    on_volume_grid = segments.maskToOrientedImage(mask, volume)
    assert not slicer.vtkOrientedImageDataResample.DoGeometriesMatch(on_volume_grid, modifier)  # what Slicer rejects
    segments.maskToModifierLabelmap(mask, volume, segmentation, modifier)
    assert (modifier.GetDimensions(), modifier.GetSpacing()) == before  # the editor's geometry is kept
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    assert logic.SetBinaryLabelmapToSegment(modifier, segmentation, segment, logic.MODE_REPLACE, modifier.GetExtent())
    assert np.array_equal(segments.segmentMask(segmentation, segment, volume), mask)


def test_segments_stored_only_as_closed_surfaces_are_read(scene, volume):
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "surfaces")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    surface = slicer.vtkSegmentationConverter.GetSegmentationClosedSurfaceRepresentationName()
    segmentation.GetSegmentation().SetSourceRepresentationName(surface)  # as when loaded from an STL or OBJ file
    sphere = vtk.vtkSphereSource()
    sphere.SetCenter(*geometry.ijkToRas(volume, (5.0, 6.0, 2.5)))
    sphere.SetRadius(3.0)
    sphere.SetThetaResolution(24)
    sphere.SetPhiResolution(24)
    sphere.Update()
    segment = segmentation.AddSegmentFromClosedSurfaceRepresentation(sphere.GetOutput(), "ball")
    name = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
    assert not segmentation.GetSegmentation().ContainsRepresentation(name)
    assert not segmentation.GetBinaryLabelmapRepresentation(segment, slicer.vtkOrientedImageData())  # the trap
    mask = segments.segmentMask(segmentation, segment, volume)
    assert 20 < mask.sum() < 120  # a 3 mm ball on 1 x 1 x 2 mm voxels holds about 57
    status = training.describeCase(volume, segmentation, [segment])
    assert status.ok and status.foregroundVoxels["ball"] == int(mask.sum())


def test_table_rows_report_deleted_segments_and_nodes_instead_of_raising(scene, volume):
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    mask = np.zeros((6, 12, 10), dtype=bool)
    mask[1, 2:4, 2:4] = True
    kept = segments.writeMaskToSegment(mask, segmentation, volume, name="kept")
    deleted = segments.writeMaskToSegment(mask, segmentation, volume, name="deleted")
    segmentation.GetSegmentation().RemoveSegment(deleted)
    cells, status, _names = training.caseRow(training.CaseNodes(volume, segmentation, [kept, deleted]))
    assert not status.ok and "no longer exist" in cells[-1] and deleted in cells[-1]
    scene.RemoveNode(segmentation)
    cells, status, _names = training.caseRow(training.CaseNodes(volume, segmentation, [kept]))
    assert cells[1] == "(removed)" and "removed from the scene" in status.problems[0]


def test_the_view_decides_the_slicing_axis(scene):
    array = np.zeros((4, 5, 6), dtype=np.int16)
    plain = add_volume(scene, array, ijk_to_ras((1.0, 1.0, 1.0), (0.0, 0.0, 0.0)), name="plain")
    axial, sagittal, coronal = (np.eye(4), np.eye(4), np.eye(4))
    sagittal[:3, :3] = [[0, 0, 1], [-1, 0, 0], [0, 1, 0]]  # Slicer's sagittal SliceToRAS: normal = R
    coronal[:3, :3] = [[-1, 0, 0], [0, 0, 1], [0, 1, 0]]  # coronal: normal = A
    assert [geometry.sliceAxisOfView(plain, m) for m in (axial, sagittal, coronal)] == [0, 2, 1]
    # a volume acquired sagittally: its k axis points along R, so the sagittal view cuts across k
    turned = add_volume(scene, array, ijk_to_ras((1.0, 1.0, 3.0), (0.0, 0.0, 0.0), rotation(90, 1)), name="turned")
    assert geometry.sliceAxisOfView(turned, sagittal) == 0
    assert geometry.sliceAxisOfView(turned, geometry.numpyToMatrix(axial)) == 2
    position = geometry.ijkToRas(turned, (2.0, 3.0, 1.2))
    assert geometry.sliceIndexAt(turned, position, 0) == 1 and geometry.sliceIndexAt(turned, position, 1) == 3


def test_the_slice_at_a_position_is_the_cores_slice_clipped_to_the_volume(scene):
    from samtune.data.slicing import slice_index

    array = np.zeros((4, 5, 6), dtype=np.int16)  # K, J, I
    node = add_volume(scene, array, ijk_to_ras((0.8, 1.1, 2.5), (3.0, -4.0, 9.0), rotation(35, 2)), name="oblique")
    for ijk in [(1.2, 3.6, 2.4), (5.49, 0.51, 3.2), (0.0, 4.0, 0.0)]:
        position = geometry.ijkToRas(node, ijk)
        assert [geometry.sliceIndexAt(node, position, axis) for axis in (0, 1, 2)] == [
            slice_index(geometry.rasToIjk(node, position), axis) for axis in (0, 1, 2)
        ]
    assert [geometry.sliceIndexAt(node, geometry.ijkToRas(node, (-3.0, -1.0, -7.0)), a) for a in (0, 1, 2)] == [0] * 3
    beyond = geometry.ijkToRas(node, (9.0, 12.0, 6.0))
    assert [geometry.sliceIndexAt(node, beyond, axis) for axis in (0, 1, 2)] == [3, 4, 5]  # the last slices


def test_reader_geometry_helpers_round_trip(scene, volume):
    image = geometry.referenceImage(volume)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = 1
    assert geometry.orientedToArray(image).shape == (6, 12, 10) and not geometry.isEmpty(image)
