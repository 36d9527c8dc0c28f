"""Prompts kept per slice: points, scribbles, a box and a lasso for each ``(axis, slice)`` a user worked on.

The Segment Editor effect records every click in voxel coordinates; a box drawn on one slice must
not pin the clicks on other slices to it, and a click in a sagittal view belongs to a sagittal
slice. :class:`PromptBook` keeps them apart: each ``(axis, slice)`` has its own points and at most
one box, at most one lasso, any number of scribbles, and asking for a slice's prompts returns only
that slice's. A drag stays on the slice it ends on (box) or starts on (scribble, lasso), even if
the view moved a slice meanwhile.

Coordinates: continuous voxel ``(i, j, k)``; ``axis`` is the numpy slicing axis (0 = ``k``,
1 = ``j``, 2 = ``i``); a voxel's slice is :func:`samtune.data.slicing.slice_index`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from samtune.data.slicing import slice_index
from samtune.errors import ConfigurationError

Point = tuple[float, float, float]


@dataclass
class SlicePrompts:
    """What the user put on one slice: points with labels (1 inside, 0 outside), scribbles (a path
    of points and its label), an optional box and an optional lasso (a closed outline)."""

    points: list[Point] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    box: tuple[float, float, float, float, float, float] | None = None
    scribbles: list[tuple[list[Point], int]] = field(default_factory=list)
    lasso: list[Point] | None = None

    @property
    def is_empty(self) -> bool:
        return not self.points and self.box is None and not self.scribbles and self.lasso is None


def _check_label(label: int) -> None:
    if label not in (0, 1):
        raise ConfigurationError(f"A prompt's label is 1 (inside) or 0 (outside), got {label!r}.")


def _on_slice(path: Sequence[Sequence[float]], axis: int, what: str, least: int) -> tuple[int, list[Point]]:
    """The slice of a path's first position, and the path flattened onto it."""
    if len(path) < least:
        raise ConfigurationError(f"A {what} needs at least {least} positions, got {len(path)}.")
    index = slice_index(path[0], axis)
    flat = []
    for position in path:
        values = [float(v) for v in position]
        values[2 - axis] = float(index)
        flat.append((values[0], values[1], values[2]))
    return index, flat


class PromptBook:
    """Points and boxes per ``(axis, slice)``."""

    def __init__(self) -> None:
        self._slices: dict[tuple[int, int], SlicePrompts] = {}

    def add_point(self, ijk: Sequence[float], label: int, *, axis: int) -> tuple[int, int]:
        """Record a point; returns its ``(axis, slice)`` key."""
        _check_label(label)
        key = (axis, slice_index(ijk, axis))
        entry = self._slices.setdefault(key, SlicePrompts())
        entry.points.append((float(ijk[0]), float(ijk[1]), float(ijk[2])))
        entry.labels.append(int(label))
        return key

    def set_box(self, corner: Sequence[float], other: Sequence[float], *, axis: int) -> tuple[int, int]:
        """Record the box spanned by two corners on one slice (the second corner's slice; replaces its box)."""
        index = slice_index(other, axis)
        low, high = [float(v) for v in corner], [float(v) for v in other]
        low[2 - axis] = high[2 - axis] = float(index)  # a drag that ends a slice away stays on one slice
        key = (axis, index)
        self._slices.setdefault(key, SlicePrompts()).box = (*low, *high)  # type: ignore[assignment]
        return key

    def add_scribble(self, path: Sequence[Sequence[float]], label: int, *, axis: int) -> tuple[int, int]:
        """Record a scribble (the voxel positions a drag passed, in order) on its first position's slice."""
        _check_label(label)
        index, flat = _on_slice(path, axis, "scribble", 1)
        key = (axis, index)
        self._slices.setdefault(key, SlicePrompts()).scribbles.append((flat, int(label)))
        return key

    def set_lasso(self, outline: Sequence[Sequence[float]], *, axis: int) -> tuple[int, int]:
        """Record a closed outline on its first position's slice (replaces that slice's lasso)."""
        index, flat = _on_slice(outline, axis, "lasso", 3)
        key = (axis, index)
        self._slices.setdefault(key, SlicePrompts()).lasso = flat
        return key

    def prompts(self, axis: int, index: int) -> SlicePrompts:
        """The prompts of one slice (empty when it has none)."""
        return self._slices.get((axis, int(index)), SlicePrompts())

    def clear(self, axis: int | None = None, index: int | None = None) -> None:
        """Forget everything, or one slice's prompts."""
        if axis is None:
            self._slices.clear()
        else:
            self._slices.pop((axis, int(index if index is not None else -1)), None)

    @property
    def slices(self) -> list[tuple[int, int]]:
        """The ``(axis, slice)`` keys that hold prompts."""
        return [key for key, entry in self._slices.items() if not entry.is_empty]


__all__ = ["PromptBook", "SlicePrompts"]
