"""User prompts for prompted prediction, in voxel coordinates.

Two frames appear here:

* **Voxel (IJK) frame**: integer-valued ITK indices ``(i, j, k)`` of the input volume; numpy
  arrays are indexed ``[k, j, i]``.
* **Slice pixel frame**: on a slice cut along numpy axis ``axis``, ``x`` is the column (the
  slice array's last axis) and ``y`` the row, both in voxel units, pixel centres at integers.

Boxes are ``XYXY`` with *inclusive* pixel indices (a box around a single pixel ``(5, 7)`` is
``(5, 7, 5, 7)``), as MedSAM derives them from masks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from samtune.data.slicing import in_plane_components, slice_index
from samtune.errors import ConfigurationError
from samtune.predict.config import PromptSpec
from samtune.predict.strokes import lasso_mask, mask_bounding_box, scribble_points


@dataclass
class SlicePrompt:
    """Prompts on one slice, in that slice's pixel frame.

    Attributes:
        boxes: ``(N, 4)`` XYXY boxes, inclusive pixel indices. Each box is one object; the
            masks of several boxes on a slice are united.
        points: ``(P, 2)`` ``(x, y)`` pixel positions.
        point_labels: ``(P,)`` 1 for a positive (inside) point, 0 for a negative one.
        mask: ``(H, W)`` boolean mask prompt on the slice's grid (a lasso's interior, or the
            segment being refined), given to SAM's mask input with every object; ``None``: none.
    """

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), dtype=np.float32))
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.float32))
    point_labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=np.int64))
    mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.points = np.asarray(self.points, dtype=np.float32).reshape(-1, 2)
        self.point_labels = np.asarray(self.point_labels, dtype=np.int64).reshape(-1)
        if len(self.points) != len(self.point_labels):
            raise ConfigurationError(
                f"Got {len(self.points)} points but {len(self.point_labels)} point labels; "
                "give one label (1 = inside, 0 = outside) per point."
            )
        if np.any((self.point_labels != 0) & (self.point_labels != 1)):
            raise ConfigurationError(
                f"Point labels must be 1 (inside) or 0 (outside), got {sorted(set(self.point_labels))}."
            )
        bad = self.boxes[(self.boxes[:, 2] < self.boxes[:, 0]) | (self.boxes[:, 3] < self.boxes[:, 1])]
        if len(bad):
            raise ConfigurationError(
                f"Boxes must be XYXY with x1 >= x0 and y1 >= y0, got {bad[0].tolist()}. Give the top-left corner first."
            )

        if self.mask is not None:
            self.mask = np.asarray(self.mask, dtype=bool)
            if self.mask.ndim != 2:
                raise ConfigurationError(f"A mask prompt is one slice (H, W), got shape {self.mask.shape}.")

    @property
    def is_empty(self) -> bool:
        """True when the slice carries no box, no point and no non-empty mask."""
        return len(self.boxes) == 0 and len(self.points) == 0 and (self.mask is None or not self.mask.any())


def box_prompts_from_ijk(
    boxes: Iterable[Sequence[float]], *, axis: int, shape: tuple[int, int, int]
) -> dict[int, SlicePrompt]:
    """Expand 3D voxel boxes ``(i0, j0, k0, i1, j1, k1)`` (inclusive) into per-slice 2D boxes.

    Args:
        boxes: 3D boxes in ITK index order, inclusive bounds.
        axis: numpy slice axis (0 = k, 1 = j, 2 = i).
        shape: Volume grid ``(K, J, I)``.

    Returns:
        Slice index -> prompt with one XYXY box per 3D box that covers the slice.

    Raises:
        ConfigurationError: A box with the wrong length, reversed bounds or outside the volume.
    """
    size_ijk = (shape[2], shape[1], shape[0])
    x_comp, y_comp = in_plane_components(axis)
    slice_comp = 2 - axis
    per_slice: dict[int, list[list[float]]] = {}
    for box in boxes:
        values = [float(v) for v in box]
        if len(values) != 6:
            raise ConfigurationError(f"A 3D box needs 6 numbers (i0 j0 k0 i1 j1 k1), got {len(values)}: {values}.")
        low, high = values[:3], values[3:]
        for c in range(3):
            if high[c] < low[c]:
                raise ConfigurationError(f"Box {values}: upper bound below lower bound on axis {'ijk'[c]}.")
            if low[c] < 0 or high[c] > size_ijk[c] - 1:
                raise ConfigurationError(
                    f"Box {values} lies outside the volume (valid i 0..{size_ijk[0] - 1}, "
                    f"j 0..{size_ijk[1] - 1}, k 0..{size_ijk[2] - 1})."
                )
        for s in range(int(np.ceil(low[slice_comp])), int(np.floor(high[slice_comp])) + 1):
            per_slice.setdefault(s, []).append([low[x_comp], low[y_comp], high[x_comp], high[y_comp]])
    return {s: SlicePrompt(boxes=np.asarray(b)) for s, b in sorted(per_slice.items())}


def point_prompts_from_ijk(
    points: Iterable[Sequence[float]],
    labels: Iterable[int],
    *,
    axis: int,
    shape: tuple[int, int, int] | None = None,
) -> dict[int, SlicePrompt]:
    """Place voxel points ``(i, j, k)`` on their slices as ``(x, y)`` points with labels.

    Args:
        points: Points in ITK index order.
        labels: 1 (inside) or 0 (outside) per point.
        axis: numpy slice axis (0 = k, 1 = j, 2 = i).
        shape: Volume grid ``(K, J, I)``; when given, a point outside it is refused (as a box is).

    Raises:
        ConfigurationError: A point without 3 numbers, or outside the volume.
    """
    x_comp, y_comp = in_plane_components(axis)
    per_slice: dict[int, tuple[list[list[float]], list[int]]] = {}
    for point, label in zip(points, labels):
        p = [float(v) for v in point]
        if len(p) != 3:
            raise ConfigurationError(f"A point needs 3 numbers (i j k), got {p}.")
        if shape is not None:
            size_ijk = (shape[2], shape[1], shape[0])
            if any(not -0.5 <= p[c] <= size_ijk[c] - 0.5 for c in range(3)):
                raise ConfigurationError(
                    f"Point {[int(v) if v.is_integer() else v for v in p]} lies outside the volume (valid i "
                    f"0..{size_ijk[0] - 1}, j 0..{size_ijk[1] - 1}, k 0..{size_ijk[2] - 1}). Give a voxel inside it."
                )
        s = slice_index(p, axis)
        coords, labs = per_slice.setdefault(s, ([], []))
        coords.append([p[x_comp], p[y_comp]])
        labs.append(int(label))
    return {
        s: SlicePrompt(points=np.asarray(c), point_labels=np.asarray(lab)) for s, (c, lab) in sorted(per_slice.items())
    }


def prompt_on_slice(
    axis: int,
    slice_shape: tuple[int, int],
    points: Sequence[Sequence[float]] = (),
    labels: Sequence[int] = (),
    box: Sequence[float] | None = None,
    *,
    scribbles: Sequence[tuple[Sequence[Sequence[float]], int]] = (),
    lasso: Sequence[Sequence[float]] | None = None,
    mask: np.ndarray | None = None,
) -> tuple[int, SlicePrompt]:
    """Map voxel prompts on one slice (cut across numpy ``axis``) to that slice's pixel frame.

    Args:
        axis: numpy slicing axis (0 = k, 1 = j, 2 = i).
        slice_shape: ``(H, W)`` of a slice.
        points: ``(i, j, k)`` voxel positions (continuous; all on one slice after rounding).
        labels: 1 (inside) or 0 (outside) per point.
        box: ``(i0, j0, k0, i1, j1, k1)``, both corners on the same slice.
        scribbles: ``(path, label)`` per stroke: its voxel positions in drawing order; points are
            sampled along it (:func:`samtune.predict.strokes.scribble_points`).
        lasso: A closed outline's voxel positions: a box around it and its interior as a mask prompt.
        mask: ``(H, W)`` mask on the slice (the segment being refined), given as a mask prompt.

    Returns:
        The slice index and the prompt in that slice's pixel frame.

    Raises:
        ConfigurationError: Prompts on several slices, or none that says its slice; a mask of another shape.
    """
    x_comp, y_comp = in_plane_components(axis)

    def pixels(positions: Sequence[Sequence[float]]) -> np.ndarray:
        return np.asarray([[float(p[x_comp]), float(p[y_comp])] for p in positions], dtype=np.float32).reshape(-1, 2)

    placed = [*points, *(p for path, _ in scribbles for p in path), *(lasso or ())]
    if box is not None:
        placed += [box[:3], box[3:]]
    slices = {slice_index(p, axis) for p in placed}
    if len(slices) != 1:
        raise ConfigurationError(
            f"Prompts must lie on one slice along the slicing axis; they span slices {sorted(slices)}."
            if slices
            else "No prompt says which slice to segment: give a point, box, scribble or lasso with a mask."
        )
    coords, point_labels = [pixels(points)], [np.asarray(labels, dtype=np.int64).reshape(-1)]
    for path, label in scribbles:
        sampled = scribble_points(pixels(path))
        coords.append(sampled)
        point_labels.append(np.full(len(sampled), int(label), dtype=np.int64))
    boxes = np.zeros((0, 4), dtype=np.float32)
    if box is not None:
        corners = pixels([box[:3], box[3:]])
        boxes = np.concatenate([corners.min(axis=0), corners.max(axis=0)])[None]
    masks = [] if mask is None else [np.asarray(mask, dtype=bool)]
    if lasso is not None:
        inside = lasso_mask(pixels(lasso), slice_shape)
        boxes = np.concatenate([boxes, mask_bounding_box(inside)[None]])
        masks.append(inside)
    for m in masks:
        if m.shape != tuple(slice_shape):
            raise ConfigurationError(f"A mask prompt of shape {m.shape} does not fit slices of {tuple(slice_shape)}.")
    prompt = SlicePrompt(boxes=boxes, points=np.concatenate(coords), point_labels=np.concatenate(point_labels),
                         mask=np.logical_or.reduce(masks) if masks else None)  # fmt: skip
    return slices.pop(), prompt


def merge_prompts(*prompt_maps: dict[int, SlicePrompt]) -> dict[int, SlicePrompt]:
    """Combine several slice -> prompt maps (boxes and points on the same slice are joined, masks united)."""
    merged: dict[int, SlicePrompt] = {}
    for prompts in prompt_maps:
        for s, p in prompts.items():
            if s not in merged:
                mask = None if p.mask is None else p.mask.copy()
                merged[s] = SlicePrompt(p.boxes.copy(), p.points.copy(), p.point_labels.copy(), mask)
            else:
                m = merged[s]
                masks = [x for x in (m.mask, p.mask) if x is not None]
                merged[s] = SlicePrompt(
                    np.concatenate([m.boxes, p.boxes]),
                    np.concatenate([m.points, p.points]),
                    np.concatenate([m.point_labels, p.point_labels]),
                    np.logical_or.reduce(masks) if masks else None,
                )
    return dict(sorted(merged.items()))


def boxes_from_label(label: np.ndarray, *, axis: int, margin: int = 0) -> dict[int, SlicePrompt]:
    """Tight per-slice boxes around the foreground of ``label`` (a ``[k, j, i]`` mask).

    Used for the "box from the reference" upper bound in evaluations and in the demo.

    Args:
        label: Binary or label array ``(K, J, I)``; nonzero is foreground.
        axis: numpy slice axis.
        margin: Pixels added on each side (clipped to the slice).
    """
    moved = np.moveaxis(np.asarray(label) != 0, axis, 0)
    prompts: dict[int, SlicePrompt] = {}
    for s, mask in enumerate(moved):
        rows, cols = np.nonzero(mask)
        if len(rows) == 0:
            continue
        h, w = mask.shape
        box = [
            max(cols.min() - margin, 0),
            max(rows.min() - margin, 0),
            min(cols.max() + margin, w - 1),
            min(rows.max() + margin, h - 1),
        ]
        prompts[s] = SlicePrompt(boxes=np.asarray([box], dtype=np.float32))
    return prompts


def prompts_from_spec(spec: PromptSpec | None, *, axis: int, shape: tuple[int, ...]) -> dict[int, SlicePrompt] | None:
    """A job's prompts (3D boxes and points in voxel indices) on the slices of numpy ``axis``;
    ``None`` when there are none (automatic mode)."""
    if spec is None or spec.is_empty:
        return None
    maps = []
    if spec.box:
        maps.append(box_prompts_from_ijk([tuple(b) for b in spec.box], axis=axis, shape=shape[:3]))  # type: ignore[arg-type]
    points = [tuple(p) for p in spec.point + spec.neg_point]
    if points:
        labels = [1] * len(spec.point) + [0] * len(spec.neg_point)
        maps.append(point_prompts_from_ijk(points, labels, axis=axis, shape=shape[:3]))  # type: ignore[arg-type]
    return merge_prompts(*maps)
