"""MRML <-> SAMTune core: volume and segmentation nodes to arrays with geometry, and back.

Only MRML and VTK classes are used here (no ``slicer.mrmlScene``, ``slicer.app`` or
``slicer.modules``), so every function works on an explicit scene and is tested with the real
MRML classes of the ``slicer-core`` wheel.

Frames:

* MRML stores an ``IJKToRAS`` matrix per volume (node-local RAS; a parent transform places the node
  in the world).
* The core's :class:`samtune.data.Geometry` is ITK's: LPS millimetres, spacing, origin and
  direction columns for ``i, j, k``. Arrays are ``[k, j, i]`` in both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from samtune.data.labels import labelled_slices_from_label
from samtune.data.slicing import resolve_axis
from samtune.data.volume import Geometry, Volume

#: RAS <-> LPS: flip the first two axes.
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: Segment colours for predicted structures (Slicer's first generic anatomy colours).
DEFAULT_COLORS = [
    (0.50, 0.68, 0.50),
    (0.95, 0.84, 0.57),
    (0.69, 0.48, 0.39),
    (0.44, 0.69, 0.80),
    (0.85, 0.40, 0.40),
    (0.56, 0.50, 0.80),
]

#: Write modes of :func:`writeMaskToSegment`.
WRITE_MODES = ("replace", "add", "intersect")


def _matrixToNumpy(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _numpyToMatrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def ijkToRasOfVolume(volumeNode) -> np.ndarray:
    """The volume's 4x4 ``IJKToRAS`` matrix (node-local, without parent transforms)."""
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return _matrixToNumpy(matrix)


def geometryFromIjkToRas(ijkToRas: np.ndarray) -> Geometry:
    """Core (ITK, LPS) geometry from an ``IJKToRAS`` matrix."""
    ijkToLps = RAS_TO_LPS @ np.asarray(ijkToRas, dtype=float)
    axes = ijkToLps[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    direction = axes / spacing
    return Geometry(
        spacing=tuple(float(s) for s in spacing),
        origin=tuple(float(o) for o in ijkToLps[:3, 3]),
        direction=tuple(float(d) for d in direction.reshape(-1)),
    )


def ijkToRasFromGeometry(geometry: Geometry) -> np.ndarray:
    """Inverse of :func:`geometryFromIjkToRas`."""
    return RAS_TO_LPS @ geometry.index_to_physical_matrix()


def volumeToCore(volumeNode) -> Volume:
    """A copy of the volume's voxels with its geometry: ``(K, J, I)`` scalars or ``(K, J, I, C)`` vectors.

    Raises:
        ValueError: No node, no image data, or an unsupported kind of volume (tensor volumes).
    """
    if volumeNode is None:
        raise ValueError("No volume selected. Choose the image volume to use.")
    imageData = volumeNode.GetImageData()
    if imageData is None:
        raise ValueError(f"Volume '{volumeNode.GetName()}' has no image data. Load the image again.")
    if volumeNode.IsA("vtkMRMLDiffusionTensorVolumeNode"):
        raise ValueError(f"Volume '{volumeNode.GetName()}' is a tensor volume; SAMTune needs a scalar or RGB image.")
    dims = imageData.GetDimensions()
    components = imageData.GetNumberOfScalarComponents()
    scalars = numpy_support.vtk_to_numpy(imageData.GetPointData().GetScalars())
    shape = (dims[2], dims[1], dims[0]) + ((components,) if components > 1 else ())
    array = np.array(scalars, copy=True).reshape(shape)
    if components not in (1, 3, 4):
        raise ValueError(
            f"Volume '{volumeNode.GetName()}' has {components} components per voxel; "
            "SAMTune reads scalar (1) or colour (3 or 4) images."
        )
    if components == 4:  # RGBA: drop alpha
        array = np.ascontiguousarray(array[..., :3])
    volume = Volume(array=array, geometry=geometryFromIjkToRas(ijkToRasOfVolume(volumeNode)))
    volume.metadata["name"] = volumeNode.GetName()
    return volume


def _referenceImage(volumeNode, scalarType: int = vtk.VTK_UNSIGNED_CHAR) -> slicer.vtkOrientedImageData:
    """An empty oriented image on the volume's grid (node-local coordinates)."""
    dims = volumeNode.GetImageData().GetDimensions()
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(dims)
    image.SetImageToWorldMatrix(_numpyToMatrix(ijkToRasOfVolume(volumeNode)))
    image.AllocateScalars(scalarType, 1)
    image.GetPointData().GetScalars().Fill(0)
    return image


def _orientedToArray(image: slicer.vtkOrientedImageData) -> np.ndarray:
    dims = image.GetDimensions()
    scalars = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    return np.array(scalars, copy=True).reshape(dims[2], dims[1], dims[0])


def _transformBetween(fromNode, toNode) -> vtk.vtkGeneralTransform | None:
    """Transform from ``fromNode``'s local frame to ``toNode``'s; ``None`` when they share a frame."""
    fromParent, toParent = fromNode.GetParentTransformNode(), toNode.GetParentTransformNode()
    if fromParent is None and toParent is None:
        return None
    if fromParent is not None and toParent is not None and fromParent.GetID() == toParent.GetID():
        return None
    transform = vtk.vtkGeneralTransform()
    slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(fromParent, toParent, transform)
    return transform


def segmentMask(segmentationNode, segmentId: str, volumeNode) -> np.ndarray:
    """Boolean ``(K, J, I)`` mask of one segment resampled onto the volume's grid.

    Works when the segmentation's geometry (extent, spacing, orientation) differs from the volume's
    and when the two nodes sit under different transforms (nearest-neighbour resampling).

    Raises:
        ValueError: Unknown segment id.
    """
    segmentation = segmentationNode.GetSegmentation()
    if segmentation.GetSegment(segmentId) is None:
        names = [segmentation.GetNthSegmentID(n) for n in range(segmentation.GetNumberOfSegments())]
        raise ValueError(f"Segmentation '{segmentationNode.GetName()}' has no segment '{segmentId}' (it has {names}).")
    labelmap = slicer.vtkOrientedImageData()
    reference = _referenceImage(volumeNode)
    if not segmentationNode.GetBinaryLabelmapRepresentation(segmentId, labelmap) or _isEmpty(labelmap):
        return np.zeros(_orientedToArray(reference).shape, dtype=bool)
    resampled = slicer.vtkOrientedImageData()
    slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
        labelmap, reference, resampled, False, False, _transformBetween(segmentationNode, volumeNode), 0
    )
    return _orientedToArray(resampled) > 0


def _isEmpty(image: slicer.vtkOrientedImageData) -> bool:
    extent = image.GetExtent()
    return extent[1] < extent[0] or extent[3] < extent[2] or extent[5] < extent[4]


def segmentIdsByName(segmentationNode) -> dict[str, str]:
    """``{segment name: segment id}`` of a segmentation."""
    segmentation = segmentationNode.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(n) for n in range(segmentation.GetNumberOfSegments())]
    return {segmentation.GetSegment(i).GetName(): i for i in ids}


def labelsFromSegments(segmentationNode, segmentIds: list[str], volumeNode) -> tuple[Volume, dict[str, int]]:
    """A label volume on the volume's grid: segment ``n`` of ``segmentIds`` gets value ``n + 1``.

    Where segments overlap, the later one in ``segmentIds`` wins.

    Returns:
        The label volume and ``{segment name: value}``.
    """
    if not segmentIds:
        raise ValueError(f"No segment chosen in '{segmentationNode.GetName()}'. Pick the segment(s) to learn.")
    geometry = geometryFromIjkToRas(ijkToRasOfVolume(volumeNode))
    label: np.ndarray | None = None
    structures: dict[str, int] = {}
    segmentation = segmentationNode.GetSegmentation()
    for value, segmentId in enumerate(segmentIds, start=1):
        mask = segmentMask(segmentationNode, segmentId, volumeNode)
        label = np.zeros(mask.shape, dtype=np.uint8) if label is None else label
        label[mask] = value
        structures[segmentation.GetSegment(segmentId).GetName()] = value
    assert label is not None
    return Volume(array=label, geometry=geometry), structures


@dataclass
class CaseStatus:
    """What the training-data table shows for one row.

    Attributes:
        labelledSlices: Slices that count as ground truth (painted ones, or all when fully labelled).
        totalSlices: Slices along the slicing axis.
        foregroundVoxels: Voxels inside the chosen segments, per segment name.
        problems: What is wrong with the row, in words (empty when it can be used).
    """

    labelledSlices: int = 0
    totalSlices: int = 0
    foregroundVoxels: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def describeCase(volumeNode, segmentationNode, segmentIds: list[str], *, fullyLabelled: bool = False,
                 axis: str = "auto") -> CaseStatus:  # fmt: skip
    """Check one training-table row and count its labelled slices, without raising.

    Reports: missing nodes, a vector volume with an unexpected number of components, no segment
    chosen, an empty segment, a segment (partly) outside the volume's grid, a segmentation that does
    not overlap the volume at all.
    """
    status = CaseStatus()
    if volumeNode is None or segmentationNode is None:
        status.problems.append("Choose both a volume and a segmentation.")
        return status
    try:
        volume = volumeToCore(volumeNode)
    except ValueError as error:
        status.problems.append(str(error))
        return status
    if not segmentIds:
        status.problems.append("Choose the segment(s) to learn.")
        return status
    axisIndex = resolve_axis(volume, axis)
    status.totalSlices = volume.shape[axisIndex]
    label, structures = labelsFromSegments(segmentationNode, segmentIds, volumeNode)
    for name, value in structures.items():
        inside = int((label.array == value).sum())
        status.foregroundVoxels[name] = inside
        if inside == 0:
            outside = _segmentVoxelsOutside(segmentationNode, segmentIds[value - 1], volumeNode)
            if outside:
                status.problems.append(
                    f"Segment '{name}' lies outside volume '{volumeNode.GetName()}' (geometry mismatch): "
                    "pick the volume it was drawn on."
                )
            else:
                status.problems.append(f"Segment '{name}' is empty: paint it on a few slices first.")
    labelled = labelled_slices_from_label(label.array, axisIndex)
    status.labelledSlices = status.totalSlices if fullyLabelled else int(labelled.sum())
    return status


def _segmentVoxelsOutside(segmentationNode, segmentId: str, volumeNode) -> bool:
    """True when the segment has voxels but none of them fall on the volume's grid."""
    labelmap = slicer.vtkOrientedImageData()
    if not segmentationNode.GetBinaryLabelmapRepresentation(segmentId, labelmap) or _isEmpty(labelmap):
        return False
    value = labelmap.GetPointData().GetScalars()
    return value is not None and numpy_support.vtk_to_numpy(value).any()


def maskToOrientedImage(mask: np.ndarray, volumeNode) -> slicer.vtkOrientedImageData:
    """A ``(K, J, I)`` mask on the volume's grid as an oriented image (the Segment Editor's modifier labelmap)."""
    image = _referenceImage(volumeNode)
    expected = tuple(reversed(image.GetDimensions()))
    if tuple(mask.shape) != expected:
        raise ValueError(
            f"The mask has shape {tuple(mask.shape)} but volume '{volumeNode.GetName()}' is {expected} ([k, j, i]); "
            "predict on this volume's grid."
        )
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = np.asarray(mask, dtype=bool).ravel()
    return image


class SegmentationUndo:
    """Undo for writes into an existing segmentation, through Slicer's own ``vtkSegmentationHistory``.

    Call :meth:`saveState` before a write; :meth:`undo` restores the segmentation as it was.
    """

    def __init__(self, segmentationNode, maximumStates: int = 5) -> None:
        self.segmentationNode = segmentationNode
        self.history = slicer.vtkSegmentationHistory()
        self.history.SetMaximumNumberOfStates(maximumStates)
        self.history.SetSegmentation(segmentationNode.GetSegmentation())

    def saveState(self) -> None:
        if not self.history.SaveState():
            raise RuntimeError(f"Could not save the state of '{self.segmentationNode.GetName()}' for undo.")

    @property
    def canUndo(self) -> bool:
        return bool(self.history.IsRestorePreviousStateAvailable())

    def undo(self) -> bool:
        return bool(self.history.RestorePreviousState())


def writeMaskToSegment(mask: np.ndarray, segmentationNode, volumeNode, *, name: str | None = None,
                       segmentId: str | None = None, mode: str = "replace", color=None,
                       undo: SegmentationUndo | None = None) -> str:  # fmt: skip
    """Write a ``(K, J, I)`` mask on the volume's grid into a segment; returns the segment id.

    Args:
        mask: Boolean mask on ``volumeNode``'s grid.
        segmentationNode: Target segmentation (its geometry may differ from the volume's).
        volumeNode: The volume the mask was predicted on.
        name: Name of a new segment (used when ``segmentId`` is ``None``; an existing segment of
            that name is reused).
        segmentId: Existing segment to modify.
        mode: ``replace`` the segment, ``add`` to it (union) or ``intersect`` with it.
        color: RGB in 0..1 for a new segment.
        undo: When given, its state is saved before anything is changed.
    """
    if mode not in WRITE_MODES:
        raise ValueError(f"Write mode must be one of {WRITE_MODES}, got '{mode}'.")
    segmentation = segmentationNode.GetSegmentation()
    if segmentId is None:
        segmentId = segmentIdsByName(segmentationNode).get(name or "")
    if segmentId is not None and segmentation.GetSegment(segmentId) is None:
        raise ValueError(f"Segmentation '{segmentationNode.GetName()}' has no segment '{segmentId}'.")
    if segmentationNode.GetSegmentation().GetNumberOfSegments() == 0:
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
    if undo is not None:
        undo.saveState()
    if segmentId is None:
        count = segmentation.GetNumberOfSegments()
        rgb = color or DEFAULT_COLORS[count % len(DEFAULT_COLORS)]
        segmentId = segmentation.AddEmptySegment("", name or f"SAMTune {count + 1}", list(rgb))
    if mode == "intersect":  # on the volume's grid: what lies outside it is outside the mask too
        mask = np.asarray(mask, dtype=bool) & segmentMask(segmentationNode, segmentId, volumeNode)
        mode = "replace"
    image = maskToOrientedImage(mask, volumeNode)
    transform = _transformBetween(volumeNode, segmentationNode)
    if transform is not None:  # into the segmentation's frame (a linear transform only moves the grid)
        slicer.vtkOrientedImageDataResample.TransformOrientedImage(image, transform, False, False)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    modeValue = logic.MODE_REPLACE if mode == "replace" else logic.MODE_MERGE_MAX
    if not logic.SetBinaryLabelmapToSegment(image, segmentationNode, segmentId, modeValue, image.GetExtent()):
        raise RuntimeError(f"Slicer could not write the mask into segment '{segmentId}'.")
    return segmentId


def writeLabelsToSegmentation(
    label: np.ndarray,
    structures: dict[str, int],
    segmentationNode,
    volumeNode,
    *,
    mode: str = "replace",
    undo: SegmentationUndo | None = None,
) -> dict[str, str]:
    """Write each structure of a label array into a segment of the same name (created when missing).

    Returns:
        ``{structure name: segment id}``.
    """
    if undo is not None:
        undo.saveState()
    ids = {}
    for name, value in structures.items():
        ids[name] = writeMaskToSegment(np.asarray(label) == value, segmentationNode, volumeNode, name=name, mode=mode)
    return ids


@dataclass
class CaseNodes:
    """One row of the training-data table.

    Attributes:
        volumeNode: Image volume (scalar or RGB).
        segmentationNode: Segmentation holding the labels.
        segmentIds: Segments to learn (one structure each).
        fullyLabelled: Every slice is ground truth (unpainted slices are true background).
        caseId: Name used in the manifest and for exported files (default: the volume's name).
    """

    volumeNode: object
    segmentationNode: object
    segmentIds: list[str]
    fullyLabelled: bool = False
    caseId: str | None = None


def _safeName(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._")
    return cleaned or "case"


def exportTrainingSet(cases: list[CaseNodes], folder: str) -> str:
    """Write every case's image (``.nrrd``) and labels (``.seg.nrrd``) plus ``manifest.json`` to ``folder``.

    The folder can be copied to a server and trained there with ``samtune train`` or the worker.
    Files are written atomically; the manifest last, so a folder without one is incomplete.

    Returns:
        The manifest's path.
    """
    from pathlib import Path

    from samtune.data.io import write_label, write_volume
    from samtune.runs import atomic_write_text

    if not cases:
        raise ValueError("The training table is empty: add at least one volume with its segmentation.")
    target = Path(folder).expanduser()
    target.mkdir(parents=True, exist_ok=True)
    entries, used = [], set()
    for case in cases:
        base = _safeName(case.caseId or case.volumeNode.GetName())
        name, n = base, 2
        while name in used:
            name, n = f"{base}_{n}", n + 1
        used.add(name)
        image = volumeToCore(case.volumeNode)
        label, structures = labelsFromSegments(case.segmentationNode, case.segmentIds, case.volumeNode)
        imagePath = write_volume(image, target / f"{name}.nrrd")
        labelPath = write_label(label, target / f"{name}.seg.nrrd", segment_names=structures)
        entries.append({
            "id": name, "image": imagePath.name, "label": labelPath.name,
            "structures": structures, "fully_labelled": bool(case.fullyLabelled),
        })  # fmt: skip
    manifest = target / "manifest.json"
    import json

    atomic_write_text(manifest, json.dumps({"cases": entries}, indent=2) + "\n")
    return str(manifest)


def rasToIjk(volumeNode, ras) -> np.ndarray:
    """World RAS position(s) -> continuous voxel ``(i, j, k)`` of the volume (parent transforms applied).

    Args:
        ras: ``(3,)`` or ``(N, 3)`` world coordinates (what a click in a slice view gives).

    Returns:
        Same shape, continuous IJK (round to get the voxel).
    """
    points = np.atleast_2d(np.asarray(ras, dtype=float))
    parent = volumeNode.GetParentTransformNode()
    if parent is not None:  # world -> the volume's local frame
        toLocal = vtk.vtkGeneralTransform()
        slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(None, parent, toLocal)
        points = np.array([toLocal.TransformPoint(*p) for p in points])
    rasToIjkMatrix = np.linalg.inv(ijkToRasOfVolume(volumeNode))
    ijk = (rasToIjkMatrix @ np.c_[points, np.ones(len(points))].T).T[:, :3]
    return ijk[0] if np.ndim(ras) == 1 else ijk


def ijkToRas(volumeNode, ijk) -> np.ndarray:
    """Inverse of :func:`rasToIjk`: voxel ``(i, j, k)`` -> world RAS."""
    points = np.atleast_2d(np.asarray(ijk, dtype=float))
    ras = (ijkToRasOfVolume(volumeNode) @ np.c_[points, np.ones(len(points))].T).T[:, :3]
    parent = volumeNode.GetParentTransformNode()
    if parent is not None:
        toWorld = vtk.vtkGeneralTransform()
        slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(parent, None, toWorld)
        ras = np.array([toWorld.TransformPoint(*p) for p in ras])
    return ras[0] if np.ndim(ijk) == 1 else ras
