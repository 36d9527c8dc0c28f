"""Segments between MRML and the SAMTune core: read masks, write masks, undo, the editor's modifier.

Masks are boolean ``(K, J, I)`` arrays on a *volume's* grid; segmentations may lie on another grid
(extent, spacing, orientation) and under another parent transform, so every read and write
resamples between the two (nearest neighbour). MRML and VTK classes only; tested on real MRML
from ``slicer-core``.
"""

from __future__ import annotations

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from SAMTuneLib.Geometry import (
    gridShape,
    ijkToRasOfVolume,
    isEmpty,
    numpyToMatrix,
    orientedToArray,
    referenceImage,
    transformBetween,
)

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


def ensureBinaryLabelmap(segmentationNode) -> None:
    """Give the segmentation a binary-labelmap representation (segments drawn or loaded as surfaces have none).

    Raises:
        ValueError: Slicer cannot convert its segments to a labelmap.
    """
    name = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
    segmentation = segmentationNode.GetSegmentation()
    if segmentation.GetNumberOfSegments() == 0 or segmentation.ContainsRepresentation(name):
        return
    if not segmentationNode.CreateBinaryLabelmapRepresentation():
        raise ValueError(
            f"Segmentation '{segmentationNode.GetName()}' holds only '{segmentation.GetSourceRepresentationName()}' "
            "data that Slicer cannot turn into a labelmap. Convert it in the Segmentations module "
            "(Representations > Binary labelmap > Create)."
        )


def _checkSegment(segmentationNode, segmentId: str) -> None:
    segmentation = segmentationNode.GetSegmentation()
    if segmentation.GetSegment(segmentId) is None:
        ids = [segmentation.GetNthSegmentID(n) for n in range(segmentation.GetNumberOfSegments())]
        raise ValueError(f"Segmentation '{segmentationNode.GetName()}' has no segment '{segmentId}' (it has {ids}).")


def segmentLabelmap(segmentationNode, segmentId: str) -> slicer.vtkOrientedImageData | None:
    """The segment's own binary labelmap (its grid), or ``None`` when it has no voxels."""
    _checkSegment(segmentationNode, segmentId)
    ensureBinaryLabelmap(segmentationNode)
    labelmap = slicer.vtkOrientedImageData()
    if not segmentationNode.GetBinaryLabelmapRepresentation(segmentId, labelmap) or isEmpty(labelmap):
        return None
    return labelmap


def segmentMask(segmentationNode, segmentId: str, volumeNode) -> np.ndarray:
    """Boolean ``(K, J, I)`` mask of one segment resampled onto the volume's grid.

    Works when the segmentation's geometry (extent, spacing, orientation) differs from the volume's,
    when the two nodes sit under different transforms, and when the segments are stored only as
    closed surfaces (a labelmap representation is created first, as the Segment Editor does).

    Raises:
        ValueError: Unknown segment id, or segments that cannot be converted to a labelmap.
    """
    labelmap = segmentLabelmap(segmentationNode, segmentId)
    if labelmap is None:
        return np.zeros(gridShape(volumeNode), dtype=bool)
    reference = referenceImage(volumeNode)
    resampled = slicer.vtkOrientedImageData()
    slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
        labelmap, reference, resampled, False, False, transformBetween(segmentationNode, volumeNode), 0
    )
    return orientedToArray(resampled) > 0


#: Which other segments a write keeps out of (the effect's "Other segments" choice).
PROTECT_CHOICES = ("none", "all", "visible", "completed")


def protectedMask(segmentationNode, selectedId: str, volumeNode, protect: str = "all") -> np.ndarray:
    """Boolean ``(K, J, I)`` union, on the volume's grid, of the segments a write into ``selectedId`` keeps out of.

    Args:
        protect: ``none`` (nothing: Slicer's own masking and overwrite settings alone decide),
            ``all`` (every other segment), ``visible`` (the other segments shown in the views), or
            ``completed`` (the other segments whose status is *Completed*: Slicer has no per-segment
            lock, and its segment status is how a user marks a segment as done).

    Raises:
        ValueError: An unknown choice.
    """
    if protect not in PROTECT_CHOICES:
        raise ValueError(f"Unknown choice {protect!r} for the segments to keep out of; use one of {PROTECT_CHOICES}.")
    out = np.zeros(gridShape(volumeNode), dtype=bool)
    if protect == "none":
        return out
    display = segmentationNode.GetDisplayNode()
    segmentation = segmentationNode.GetSegmentation()
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    for segmentId in segmentIdsByName(segmentationNode).values():
        if segmentId == selectedId:
            continue
        if protect == "visible" and display is not None and not display.GetSegmentVisibility(segmentId):
            continue
        if protect == "completed" and logic.GetSegmentStatus(segmentation.GetSegment(segmentId)) != logic.Completed:
            continue
        out |= segmentMask(segmentationNode, segmentId, volumeNode)
    return out


def combineWithSegment(
    mask: np.ndarray, current: np.ndarray, mode: str, protected: np.ndarray | None = None
) -> np.ndarray:
    """What the selected segment holds after a write of ``mask``: ``replace`` (the mask), ``add`` (the union
    with ``current``) or ``intersect`` (the mask inside ``current``); nothing inside ``protected`` is added,
    and what the segment already held there stays."""
    if mode == "add":
        new = mask | current
    elif mode == "intersect":
        new = mask & current
    elif mode == "replace":
        new = mask.copy()
    else:
        raise ValueError(f"Unknown write mode {mode!r}; use replace, add or intersect.")
    if protected is not None:
        new = (new & ~protected) | (current & protected)
    return new


def segmentIdsByName(segmentationNode) -> dict[str, str]:
    """``{segment name: segment id}`` of a segmentation."""
    segmentation = segmentationNode.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(n) for n in range(segmentation.GetNumberOfSegments())]
    return {segmentation.GetSegment(i).GetName(): i for i in ids}


def labelsFromSegments(segmentationNode, segmentIds: list[str], volumeNode):
    """A label volume on the volume's grid: segment ``n`` of ``segmentIds`` gets value ``n + 1``.

    Where segments overlap, the later one in ``segmentIds`` wins.

    Returns:
        ``(samtune.data.Volume, {segment name: value})``.
    """
    from samtune.data.volume import Volume
    from SAMTuneLib.Geometry import geometryFromIjkToRas, ijkToRasOfVolume

    if not segmentIds:
        raise ValueError(f"No segment chosen in '{segmentationNode.GetName()}'. Pick the segment(s) to learn.")
    label = np.zeros(gridShape(volumeNode), dtype=np.uint8)
    structures: dict[str, int] = {}
    segmentation = segmentationNode.GetSegmentation()
    for value, segmentId in enumerate(segmentIds, start=1):
        label[segmentMask(segmentationNode, segmentId, volumeNode)] = value
        structures[segmentation.GetSegment(segmentId).GetName()] = value
    return Volume(array=label, geometry=geometryFromIjkToRas(ijkToRasOfVolume(volumeNode))), structures


def segmentHasVoxelsOffGrid(segmentationNode, segmentId: str, volumeNode) -> bool:
    """True when the segment has voxels but none of them fall on the volume's grid."""
    labelmap = segmentLabelmap(segmentationNode, segmentId)
    if labelmap is None:
        return False
    value = labelmap.GetPointData().GetScalars()
    return value is not None and bool(numpy_support.vtk_to_numpy(value).any())


def maskToOrientedImage(mask: np.ndarray, volumeNode) -> slicer.vtkOrientedImageData:
    """A ``(K, J, I)`` mask on the volume's grid as an oriented image in the volume's local frame."""
    image = referenceImage(volumeNode)
    expected = tuple(reversed(image.GetDimensions()))
    if tuple(mask.shape) != expected:
        raise ValueError(
            f"The mask has shape {tuple(mask.shape)} but volume '{volumeNode.GetName()}' is {expected} ([k, j, i]); "
            "predict on this volume's grid."
        )
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = np.asarray(mask, dtype=bool).ravel()
    return image


def maskToModifierLabelmap(mask: np.ndarray, volumeNode, segmentationNode, modifierLabelmap) -> None:
    """Fill the Segment Editor's modifier labelmap with a mask predicted on the volume's grid.

    ``modifierLabelmap`` is ``scriptedEffect.defaultModifierLabelmap()``: an image on the
    segmentation's own geometry in the segmentation node's frame. Slicer's
    ``ModifySegmentByLabelmap`` expects exactly that geometry (with masking or the editable
    intensity range on, a modifier on another grid is rejected and nothing is written), so the
    mask is moved into the segmentation's frame (parent transforms) and resampled onto the
    modifier's grid (nearest neighbour) here. The modifier keeps its geometry; its voxels are
    replaced.
    """
    image = maskToOrientedImage(mask, volumeNode)
    resampled = slicer.vtkOrientedImageData()
    slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
        image, modifierLabelmap, resampled, False, False, transformBetween(volumeNode, segmentationNode), 0
    )
    scalars = numpy_support.vtk_to_numpy(modifierLabelmap.GetPointData().GetScalars())
    scalars[:] = (numpy_support.vtk_to_numpy(resampled.GetPointData().GetScalars()) > 0).astype(scalars.dtype)
    modifierLabelmap.Modified()


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
                       undo: SegmentationUndo | None = None, protect: str = "none") -> str:  # fmt: skip
    """Write a ``(K, J, I)`` mask on the volume's grid into a segment; returns the segment id.

    Args:
        mask: Boolean mask on ``volumeNode``'s grid.
        segmentationNode: Target segmentation (its geometry and parent transform may differ from the volume's).
        volumeNode: The volume the mask was predicted on.
        name: Name of a new segment (used when ``segmentId`` is ``None``; an existing segment of
            that name is reused).
        segmentId: Existing segment to modify.
        mode: ``replace`` the segment, ``add`` to it (union) or ``intersect`` with it.
        color: RGB in 0..1 for a new segment.
        undo: When given, its state is saved before anything is changed.
        protect: Other segments the write keeps out of (:func:`protectedMask`): the segment gains no
            voxel of theirs, and they are left as they were.
    """
    if mode not in WRITE_MODES:
        raise ValueError(f"Write mode must be one of {WRITE_MODES}, got '{mode}'.")
    segmentation = segmentationNode.GetSegmentation()
    if segmentId is None:
        segmentId = segmentIdsByName(segmentationNode).get(name or "")
    if segmentId is not None:
        _checkSegment(segmentationNode, segmentId)
    if segmentation.GetNumberOfSegments() == 0:
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
    ensureBinaryLabelmap(segmentationNode)
    if undo is not None:
        undo.saveState()
    if segmentId is None:
        count = segmentation.GetNumberOfSegments()
        rgb = color or DEFAULT_COLORS[count % len(DEFAULT_COLORS)]
        segmentId = segmentation.AddEmptySegment("", name or f"SAMTune {count + 1}", list(rgb))
    if mode == "intersect" or protect != "none":  # on the volume's grid: what lies outside it is outside the mask too
        current = segmentMask(segmentationNode, segmentId, volumeNode)
        kept = protectedMask(segmentationNode, segmentId, volumeNode, protect) if protect != "none" else None
        mask = combineWithSegment(np.asarray(mask, dtype=bool), current, mode, kept)
        mode = "replace"
    image = maskToOrientedImage(mask, volumeNode)
    transform = transformBetween(volumeNode, segmentationNode)
    if transform is not None:  # into the segmentation's frame (a linear transform only moves the grid)
        slicer.vtkOrientedImageDataResample.TransformOrientedImage(image, transform, False, False)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    modeValue = logic.MODE_REPLACE if mode == "replace" else logic.MODE_MERGE_MAX
    if not logic.SetBinaryLabelmapToSegment(image, segmentationNode, segmentId, modeValue, image.GetExtent()):
        raise RuntimeError(f"Slicer could not write the mask into segment '{segmentId}'.")
    return segmentId


def sliceRuns(indices) -> list[tuple[int, int]]:
    """Sorted slice indices as runs of consecutive slices: ``[0, 1, 2, 5, 7, 8]`` -> ``[(0, 2), (5, 5), (7, 8)]``."""
    runs: list[tuple[int, int]] = []
    for index in sorted(set(int(i) for i in indices)):
        if runs and index == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], index)
        else:
            runs.append((index, index))
    return runs


def _slabImage(slab: np.ndarray, axis: int, first: int, volumeNode) -> slicer.vtkOrientedImageData:
    """A ``(K, J, I)`` block of the volume's grid that starts at slice ``first`` along ``axis``, as an
    oriented image on the volume's lattice (its extent is the block's, its geometry the volume's)."""
    extent = [0, 0, 0, 0, 0, 0]
    for numpyAxis, size in enumerate(slab.shape):
        start = first if numpyAxis == axis else 0
        extent[2 * (2 - numpyAxis)], extent[2 * (2 - numpyAxis) + 1] = start, start + size - 1
    image = slicer.vtkOrientedImageData()
    image.SetExtent(extent)
    image.SetImageToWorldMatrix(numpyToMatrix(ijkToRasOfVolume(volumeNode)))
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = np.asarray(slab, dtype=np.uint8).ravel()
    return image


def _slabWritable(segmentationNode, segmentId: str | None, volumeNode) -> bool:
    """Whether slices can be written in place: the segment exists, is stored as a non-empty binary
    labelmap (the source representation) on the volume's lattice, and no transform lies between the nodes."""
    if segmentId is None or transformBetween(volumeNode, segmentationNode) is not None:
        return False
    name = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
    segmentation = segmentationNode.GetSegmentation()
    if segmentation.GetSourceRepresentationName() != name:
        return False
    labelmap = segmentation.GetSegment(segmentId).GetRepresentation(name)  # the segment's own image, not a copy
    if labelmap is None or not labelmap.IsA("vtkOrientedImageData") or isEmpty(labelmap):
        return False
    lattice = slicer.vtkOrientedImageData()
    lattice.SetImageToWorldMatrix(numpyToMatrix(ijkToRasOfVolume(volumeNode)))
    return bool(slicer.vtkOrientedImageDataResample.DoGeometriesMatch(labelmap, lattice))


def writeSlicesToSegment(masks: dict[int, np.ndarray], axis: int, segmentationNode, volumeNode, *, name: str,
                         color=None) -> str:  # fmt: skip
    """Replace some slices of a segment, leaving every other slice as it was; returns the segment id.

    Each run of consecutive slices is written as one block of the volume's grid, the way the Segment
    Editor's "set" modification works: ``MODE_MERGE_MIN`` with the block clears the segment where the
    block is off, then ``MODE_MERGE_MASK`` sets it where the block is on (both limited to the block's
    extent; a ``MODE_REPLACE`` with an extent would drop the segment outside it). Where that cannot be
    done safely (no such segment yet, an empty one, a transform between the nodes, a labelmap on another
    lattice or a segmentation whose source is not a labelmap), the whole segment is read onto the volume's
    grid, the slices replaced, and the result written with :func:`writeMaskToSegment`.

    Args:
        masks: ``{slice index: 2D boolean mask}`` along numpy ``axis`` of the volume's ``(K, J, I)`` grid
            (an all-false mask clears its slice).
        axis: numpy axis (0 = k, 1 = j, 2 = i) the slices are cut across.
        segmentationNode: Target segmentation.
        volumeNode: The volume the masks were predicted on.
        name: The segment (created when the segmentation has none of that name).
        color: RGB in 0..1 for a new segment.

    Raises:
        ValueError: A slice index outside the volume or a mask of the wrong shape.
    """
    shape = gridShape(volumeNode)
    if int(axis) not in (0, 1, 2):
        raise ValueError(f"axis must be a numpy axis 0, 1 or 2, got {axis!r}.")
    axis = int(axis)
    sliceShape = tuple(size for numpyAxis, size in enumerate(shape) if numpyAxis != axis)
    for index, mask in masks.items():
        if not 0 <= int(index) < shape[axis]:
            raise ValueError(f"Slice {index} lies outside volume '{volumeNode.GetName()}' "
                             f"({shape[axis]} slices along axis {axis}).")  # fmt: skip
        if np.shape(mask) != sliceShape:
            raise ValueError(f"The mask of slice {index} has shape {np.shape(mask)}; slices of "
                             f"'{volumeNode.GetName()}' along axis {axis} are {sliceShape}.")  # fmt: skip
    segmentId = segmentIdsByName(segmentationNode).get(name)
    if not _slabWritable(segmentationNode, segmentId, volumeNode):
        full = (segmentMask(segmentationNode, segmentId, volumeNode) if segmentId is not None
                else np.zeros(shape, dtype=bool))  # fmt: skip
        moved = np.moveaxis(full, axis, 0)
        for index, mask in masks.items():
            moved[int(index)] = mask
        return writeMaskToSegment(full, segmentationNode, volumeNode, name=name, segmentId=segmentId, color=color)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    for first, last in sliceRuns(masks):
        slab = np.stack([np.asarray(masks[i], dtype=bool) for i in range(first, last + 1)], axis=axis)
        image = _slabImage(slab, axis, first, volumeNode)
        extent = image.GetExtent()
        # clear where the block is off (the segment's voxels only), then set where it is on
        if not logic.SetBinaryLabelmapToSegment(image, segmentationNode, segmentId, logic.MODE_MERGE_MIN, extent):
            raise RuntimeError(f"Slicer could not clear slices {first}-{last} of segment '{segmentId}'.")
        if slab.any() and not logic.SetBinaryLabelmapToSegment(
            image, segmentationNode, segmentId, logic.MODE_MERGE_MASK, extent
        ):
            raise RuntimeError(f"Slicer could not write slices {first}-{last} into segment '{segmentId}'.")
    return segmentId


def writeLabelsToSegmentation(label: np.ndarray, structures: dict[str, int], segmentationNode, volumeNode, *,
                              mode: str = "replace",
                              undo: SegmentationUndo | None = None) -> dict[str, str]:  # fmt: skip
    """Write each structure of a label array into a segment of the same name (created when missing).

    Returns:
        ``{structure name: segment id}``.
    """
    if undo is not None:
        undo.saveState()
    return {
        name: writeMaskToSegment(np.asarray(label) == value, segmentationNode, volumeNode, name=name, mode=mode)
        for name, value in structures.items()
    }
