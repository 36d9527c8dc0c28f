"""Volume geometry between MRML and the SAMTune core: IJK <-> RAS, node frames, slice views.

Only MRML and VTK classes are used (no ``slicer.mrmlScene``, ``slicer.app`` or ``slicer.modules``),
so every function works on an explicit scene and is tested with the real MRML classes of the
``slicer-core`` wheel.

Frames:

* MRML stores an ``IJKToRAS`` matrix per volume (node-local RAS; a parent transform places the node
  in the world).
* The core's :class:`samtune.data.Geometry` is ITK's: LPS millimetres, spacing, origin and
  direction columns for ``i, j, k``. Arrays are ``[k, j, i]`` in both; numpy axis 0 is ``k``.
"""

from __future__ import annotations

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from samtune.data.slicing import slice_index
from samtune.data.volume import Geometry, Volume

#: RAS <-> LPS: flip the first two axes.
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def matrixToNumpy(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def numpyToMatrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def ijkToRasOfVolume(volumeNode) -> np.ndarray:
    """The volume's 4x4 ``IJKToRAS`` matrix (node-local, without parent transforms)."""
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return matrixToNumpy(matrix)


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


def gridOf(volumeNode) -> Volume:
    """The volume's grid and geometry as a core ``Volume`` whose voxels are not copied (a zero-stride
    array of the right shape): what a grid check needs, at no cost for a large volume."""
    return Volume(array=np.broadcast_to(np.zeros((), np.uint8), gridShape(volumeNode)),
                  geometry=geometryFromIjkToRas(ijkToRasOfVolume(volumeNode)))  # fmt: skip


def gridShape(volumeNode) -> tuple[int, int, int]:
    """``(K, J, I)`` of the volume's voxel grid."""
    dims = volumeNode.GetImageData().GetDimensions()
    return dims[2], dims[1], dims[0]


def referenceImage(volumeNode, scalarType: int = vtk.VTK_UNSIGNED_CHAR) -> slicer.vtkOrientedImageData:
    """An empty oriented image on the volume's grid (node-local coordinates)."""
    dims = volumeNode.GetImageData().GetDimensions()
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(dims)
    image.SetImageToWorldMatrix(numpyToMatrix(ijkToRasOfVolume(volumeNode)))
    image.AllocateScalars(scalarType, 1)
    image.GetPointData().GetScalars().Fill(0)
    return image


def orientedToArray(image: slicer.vtkOrientedImageData) -> np.ndarray:
    """The voxels of a one-component oriented image as a ``(K, J, I)`` array (a copy)."""
    dims = image.GetDimensions()
    scalars = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    return np.array(scalars, copy=True).reshape(dims[2], dims[1], dims[0])


def isEmpty(image: slicer.vtkOrientedImageData) -> bool:
    extent = image.GetExtent()
    return extent[1] < extent[0] or extent[3] < extent[2] or extent[5] < extent[4]


def transformBetween(fromNode, toNode) -> vtk.vtkGeneralTransform | None:
    """Transform from ``fromNode``'s local frame to ``toNode``'s; ``None`` when they share a frame."""
    fromParent, toParent = fromNode.GetParentTransformNode(), toNode.GetParentTransformNode()
    if fromParent is None and toParent is None:
        return None
    if fromParent is not None and toParent is not None and fromParent.GetID() == toParent.GetID():
        return None
    transform = vtk.vtkGeneralTransform()
    slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(fromParent, toParent, transform)
    return transform


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


def sliceAxisOfView(volumeNode, sliceToRas) -> int:
    """The volume's numpy axis (0 = k, 1 = j, 2 = i) that a slice view cuts across.

    A slice view shows the plane whose normal is the third column of its ``SliceToRAS`` matrix
    (world RAS). The axis is the one of the volume's ``i, j, k`` directions (parent transforms
    applied) most parallel to that normal, so an axial, sagittal or coronal view, or an oblique view
    aligned with the volume's axes, segments the slice the user sees.

    Args:
        volumeNode: The volume being segmented.
        sliceToRas: The view's ``vtkMatrix4x4`` or a 4x4 array (``sliceNode.GetSliceToRAS()``).
    """
    matrix = matrixToNumpy(sliceToRas) if isinstance(sliceToRas, vtk.vtkMatrix4x4) else np.asarray(sliceToRas)
    normal = matrix[:3, 2] / (np.linalg.norm(matrix[:3, 2]) or 1.0)
    origin = ijkToRas(volumeNode, (0.0, 0.0, 0.0))
    directions = ijkToRas(volumeNode, np.eye(3)) - origin  # world directions of i, j, k
    cosines = np.abs(directions @ normal) / np.linalg.norm(directions, axis=1)
    component = int(np.argmax(cosines))  # 0 = i, 1 = j, 2 = k
    return 2 - component


def sliceIndexAt(volumeNode, ras, axis: int) -> int:
    """The slice (along numpy ``axis``) that contains world position ``ras``, clipped to the volume."""
    last = gridShape(volumeNode)[int(axis)] - 1
    return int(np.clip(slice_index(rasToIjk(volumeNode, ras), int(axis)), 0, last))
