"""Compare predicted label maps with reference labels: Dice, NSD and HD95 per case and structure."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from samtune.data.formats import READ_SUFFIXES, case_name
from samtune.data.image_io import read_label
from samtune.errors import ConfigurationError, DataError
from samtune.metrics import dice, hausdorff_95, normalized_surface_dice


@dataclass
class Score:
    """Metrics of one structure in one case."""

    case: str
    structure: str
    dice: float
    nsd: float
    hd95_mm: float
    reference_voxels: int
    predicted_voxels: int

    @property
    def note(self) -> str:
        """``absent in both`` when neither mask holds the structure (Dice and NSD are then 1.0 by convention)."""
        return "absent in both" if self.reference_voxels == 0 and self.predicted_voxels == 0 else ""


def pair_files(predictions: list[Path], references: list[Path]) -> list[tuple[str, Path, Path]]:
    """Pair predictions with references: by position when lists are given, by case name for folders.

    Raises:
        DataError: Every unmatched or missing file, listed together.
    """
    problems = [f"'{p}' does not exist" for p in [*predictions, *references] if not p.exists()]
    if problems:
        raise DataError("Cannot evaluate:\n  " + "\n  ".join(problems))
    if len(predictions) == 1 and len(references) == 1 and predictions[0].is_dir() and references[0].is_dir():
        from samtune.train.manifest import LABEL_NAME_SUFFIXES

        def listing(folder: Path) -> dict[str, Path]:
            return {case_name(p): p for p in sorted(folder.iterdir()) if p.name.lower().endswith(READ_SUFFIXES)}

        def case_of(reference: str) -> str:  # 'lesion0_mask' is the reference of the prediction 'lesion0'
            stems = [reference[: -len(s)] for s in LABEL_NAME_SUFFIXES if s and reference.endswith(s)]
            return next((stem for stem in stems if stem in found), reference)

        found = listing(predictions[0])
        wanted = {case_of(name): path for name, path in listing(references[0]).items()}
        if not wanted:
            raise DataError(
                f"No label map or mask picture in '{references[0]}' (looked for {', '.join(READ_SUFFIXES)})."
            )
        missing = sorted(set(wanted) - set(found))
        if missing:
            raise DataError(
                f"No prediction in '{predictions[0]}' for reference case(s) {missing}. Predict them or remove the "
                "references."
            )
        return [(name, found[name], wanted[name]) for name in sorted(wanted)]
    if len(predictions) != len(references):
        raise DataError(
            f"Got {len(predictions)} prediction(s) and {len(references)} reference(s); give them in pairs, or one "
            "folder of each."
        )
    return [(case_name(r), p, r) for p, r in zip(predictions, references)]


def evaluate_pairs(
    pairs: list[tuple[str, Path, Path]],
    *,
    structures: dict[str, int] | None = None,
    tolerance_mm: float = 1.0,
) -> list[Score]:
    """Scores of every structure in every pair (predictions must share the reference's grid).

    Args:
        pairs: ``(case, prediction file, reference file)``.
        structures: Name -> label value; default every non-zero value of each reference, named
            ``label N``. Predictions use the same values.
        tolerance_mm: NSD tolerance (> 0).

    Raises:
        ConfigurationError: A tolerance that is not a positive number.
        DataError: Every case that cannot be read or compared, listed together.
    """
    if not tolerance_mm > 0 or not math.isfinite(tolerance_mm):
        raise ConfigurationError(f"The NSD tolerance must be a positive number of mm, got {tolerance_mm}.")
    scores, problems = [], []
    for case, prediction_path, reference_path in pairs:
        try:
            reference = read_label(reference_path)
            prediction = read_label(prediction_path, reference=reference)
        except DataError as error:
            problems.append(f"{case}: {error}")
            continue
        spacing = tuple(float(s) for s in reference.spacing[::-1])  # numpy order (k, j, i)
        wanted = structures or {
            f"label {v}": int(v) for v in np.unique(reference.array) if v != 0
        }  # fmt: skip
        for name, value in wanted.items():
            p = prediction.array == value
            r = reference.array == value
            scores.append(
                Score(case, name, dice(p, r), normalized_surface_dice(p, r, spacing=spacing, tolerance_mm=tolerance_mm),
                      hausdorff_95(p, r, spacing=spacing), int(r.sum()), int(p.sum()))
            )  # fmt: skip
    if problems:
        raise DataError(f"{len(problems)} case(s) cannot be evaluated:\n  " + "\n  ".join(problems))
    return scores


def scores_csv(scores: list[Score]) -> str:
    """The scores as CSV text (HD95 of an empty mask is written as ``inf``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["case", "structure", "dice", "nsd", "hd95_mm", "reference_voxels", "predicted_voxels", "note"])
    for s in scores:
        writer.writerow([s.case, s.structure, f"{s.dice:.4f}", f"{s.nsd:.4f}", f"{s.hd95_mm:.3f}",
                         s.reference_voxels, s.predicted_voxels, s.note])  # fmt: skip
    return buffer.getvalue()


def scores_table(scores: list[Score]) -> str:
    """A plain-text table with a mean row per structure (HD95 mean over finite values)."""
    rows = [("case", "structure", "Dice", "NSD", "HD95 mm", "")]
    rows += [(s.case, s.structure, f"{s.dice:.3f}", f"{s.nsd:.3f}", f"{s.hd95_mm:.2f}", s.note) for s in scores]
    for structure in sorted({s.structure for s in scores}):
        mine = [s for s in scores if s.structure == structure]
        finite = [s.hd95_mm for s in mine if math.isfinite(s.hd95_mm)]
        hd95 = f"{np.mean(finite):.2f}" if finite else "inf"
        mean_dice, mean_nsd = np.mean([s.dice for s in mine]), np.mean([s.nsd for s in mine])
        absent = sum(1 for s in mine if s.note)
        rows.append(("mean", structure, f"{mean_dice:.3f}", f"{mean_nsd:.3f}", hd95,
                     f"{absent} case(s) absent in both counted as 1.0" if absent else ""))  # fmt: skip
    widths = [max(len(r[c]) for r in rows) for c in range(6)]
    return "\n".join("  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths)).rstrip() for row in rows)


__all__ = ["Score", "case_name", "evaluate_pairs", "pair_files", "scores_csv", "scores_table"]
