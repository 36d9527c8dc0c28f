"""The training-data table: one row per (volume, segmentation), its status, and export to a training set.

Rows are checked without raising: whatever is wrong with a row (a deleted segment, an empty one, a
segmentation drawn on another volume, a node removed from the scene) is reported in its Status
column, so one bad row never breaks the table.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from samtune.data.labels import labelled_slices_from_label
from samtune.data.slicing import resolve_axis
from SAMTuneLib.Geometry import volumeToCore
from SAMTuneLib.Segments import labelsFromSegments, segmentHasVoxelsOffGrid, segmentIdsByName


@dataclass
class CaseNodes:
    """One row of the training-data table.

    Attributes:
        volumeNode: Image volume (scalar or RGB).
        segmentationNode: Segmentation holding the labels.
        segmentIds: Segments to learn (one structure each).
        fullyLabelled: Every slice is ground truth (unpainted slices are true background).
        caseId: Name used in the manifest and for exported files (default: the volume's name).
        slices: Corrections: only these slices (along ``axis``) are ground truth, as the user left
            them after correcting or accepting them; a slice among them without the structure is a
            true negative ("structure absent"). ``None``: painted slices (or all, when fully labelled).
        axis: The numpy axis ``slices`` lie along (the training's slicing axis, ``auto``).
    """

    volumeNode: object
    segmentationNode: object
    segmentIds: list[str]
    fullyLabelled: bool = False
    caseId: str | None = None
    slices: list[int] | None = None
    axis: int | None = None


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


def casesFrom(items) -> list[CaseNodes]:
    """``CaseNodes`` from ``CaseNodes`` or ``(volumeNode, segmentationNode[, [segment names or ids][, fully]])``."""
    result = []
    for item in items:
        if isinstance(item, CaseNodes):
            result.append(item)
            continue
        volumeNode, segmentationNode, *rest = item
        byName = segmentIdsByName(segmentationNode)
        wanted = rest[0] if rest else list(byName)
        ids = [byName.get(s, s) for s in wanted]
        result.append(CaseNodes(volumeNode, segmentationNode, ids, bool(rest[1]) if len(rest) > 1 else False))
    return result


def _nodeGone(node) -> bool:
    return node is None or node.GetScene() is None


def describeCase(volumeNode, segmentationNode, segmentIds: list[str], *, fullyLabelled: bool = False,
                 axis: str = "auto") -> CaseStatus:  # fmt: skip
    """Check one training-table row and count its labelled slices. Never raises.

    Reports: missing or deleted nodes, a vector volume with an unexpected number of components, no
    segment chosen, a segment that was deleted, an empty segment, a segment outside the volume's
    grid, and any other failure (in words, with its cause).
    """
    status = CaseStatus()
    if volumeNode is None or segmentationNode is None:
        status.problems.append("Choose both a volume and a segmentation.")
        return status
    if _nodeGone(volumeNode) or _nodeGone(segmentationNode):
        status.problems.append("Its volume or segmentation was removed from the scene: remove this row.")
        return status
    try:
        _describe(status, volumeNode, segmentationNode, segmentIds, fullyLabelled, axis)
    except Exception as error:  # noqa: BLE001 - one row's failure is that row's status, never the table's
        logging.getLogger(__name__).debug("Row check failed", exc_info=True)
        status.problems.append(f"This row cannot be read: {error}")
    return status


def _describe(status, volumeNode, segmentationNode, segmentIds, fullyLabelled, axis) -> None:
    try:
        volume = volumeToCore(volumeNode)
    except ValueError as error:
        status.problems.append(str(error))
        return
    if not segmentIds:
        status.problems.append("Choose the segment(s) to learn.")
        return
    segmentation = segmentationNode.GetSegmentation()
    missing = [s for s in segmentIds if segmentation.GetSegment(s) is None]
    if missing:
        status.problems.append(
            f"Segment(s) {', '.join(missing)} no longer exist in '{segmentationNode.GetName()}': remove the row and "
            "add it again."
        )
        return
    axisIndex = resolve_axis(volume, axis)
    status.totalSlices = volume.shape[axisIndex]
    label, structures = labelsFromSegments(segmentationNode, segmentIds, volumeNode)
    for name, value in structures.items():
        inside = int((label.array == value).sum())
        status.foregroundVoxels[name] = inside
        if inside:
            continue
        if segmentHasVoxelsOffGrid(segmentationNode, segmentIds[value - 1], volumeNode):
            status.problems.append(
                f"Segment '{name}' lies outside volume '{volumeNode.GetName()}' (geometry mismatch): "
                "pick the volume it was drawn on."
            )
        else:
            status.problems.append(f"Segment '{name}' is empty: paint it on a few slices first.")
    labelled = labelled_slices_from_label(label.array, axisIndex)
    status.labelledSlices = status.totalSlices if fullyLabelled else int(labelled.sum())


def correctionSlices(volumeNode, slices, axis: int) -> list[int]:
    """The corrected slices, checked: on the volume, and along the axis training slices it (``auto``).

    Raises:
        ValueError: No slice, a slice outside the volume, or slices along another axis (a corrected
            sagittal slice would leave every axial slice it crosses partly labelled).
    """
    volume = volumeToCore(volumeNode)
    trainingAxis = resolve_axis(volume, "auto")
    names = {0: "k (axial)", 1: "j (coronal)", 2: "i (sagittal)"}
    if int(axis) != trainingAxis:
        raise ValueError(
            f"Corrections count as training data along the axis training slices '{volumeNode.GetName()}' along "
            f"({names[trainingAxis]}); these were made in a {names[int(axis)]} view. Correct the slices of a "
            f"{names[trainingAxis].split()[1][1:-1]} view."
        )
    chosen = sorted({int(s) for s in slices})
    last = volume.shape[trainingAxis] - 1
    if not chosen or chosen[0] < 0 or chosen[-1] > last:
        raise ValueError(f"Corrected slices must lie in 0..{last}, got {chosen or 'none'}.")
    return chosen


def correctionLabel(label, slices: list[int], axis: int):
    """``(label with only the corrected slices kept, the corrected slices without foreground)``."""
    import numpy as np

    kept = np.zeros_like(label.array)
    source, target = np.moveaxis(label.array, axis, 0), np.moveaxis(kept, axis, 0)
    target[slices] = source[slices]
    empty = [s for s in slices if not source[s].any()]
    return label.with_array(kept), empty


def caseRow(case: CaseNodes) -> tuple[list[str], CaseStatus, list[str]]:
    """What the table shows for ``case``: its cell texts, its status and its segment names. Never raises.

    Cells: volume, segmentation, segments, labelled slices, fully-labelled (empty: a check box), status.
    """
    status = describeCase(case.volumeNode, case.segmentationNode, case.segmentIds, fullyLabelled=case.fullyLabelled)
    if case.slices is not None and status.ok:  # a correction: the slices the user corrected or accepted
        status.labelledSlices = len(case.slices)
    names = list(status.foregroundVoxels) or list(case.segmentIds)

    def name(node) -> str:
        return "(removed)" if _nodeGone(node) else node.GetName()

    cells = [
        name(case.volumeNode), name(case.segmentationNode), ", ".join(names),
        f"{status.labelledSlices} / {status.totalSlices}", "", "OK" if status.ok else " ".join(status.problems),
    ]  # fmt: skip
    return cells, status, names


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
    from samtune.data.image_io import write_label, write_volume
    from samtune.train.manifest import write_manifest

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
        empty: list[int] = []
        if case.slices is not None:
            label, empty = correctionLabel(label, case.slices, int(case.axis if case.axis is not None else 0))
        imagePath = write_volume(image, target / f"{name}.nrrd")
        labelPath = write_label(label, target / f"{name}.seg.nrrd", segment_names=structures)
        entries.append({
            "id": name, "image": imagePath.name, "label": labelPath.name, "structures": structures,
            "fully_labelled": bool(case.fullyLabelled and case.slices is None),
            **({"empty_slices": empty} if empty else {}),
        })  # fmt: skip
    return str(write_manifest(target / "manifest.json", entries))
