"""Training-data manifest (JSON): cases with image and label paths and their structures.

```json
{"cases": [{"id": "case01", "image": "images/case01.nii.gz", "label": "labels/case01.nii.gz",
            "structures": {"left atrium": 1}, "fully_labelled": true, "empty_slices": []}]}
```

Relative paths are relative to the manifest file. Every problem is reported at once.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from samtune.data.formats import READ_SUFFIXES, case_name, is_picture
from samtune.errors import DataError, SAMTuneError

if TYPE_CHECKING:  # reading images needs SimpleITK and training cases need torch; listing files needs neither
    from samtune.train.data import TrainingCase

_CASE_KEYS = {"id", "image", "label", "structures", "fully_labelled", "empty_slices", "split"}


logger = logging.getLogger(__name__)


def write_manifest(path: str | Path, entries: list[dict[str, Any]]) -> Path:
    """Write ``{"cases": entries}`` to ``path`` atomically: the one manifest writer (the command line's
    ``samtune manifest``, a run folder's copy, the Slicer module's export)."""
    from samtune.atomic import atomic_write_text

    path = Path(path)
    atomic_write_text(path, json.dumps({"cases": entries}, indent=2) + "\n")
    return path


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    """The manifest's case entries with absolute paths.

    Raises:
        DataError: Unreadable JSON, unknown keys, missing fields or files (all listed together).
    """
    entries, problems = _entries(path)
    notes = [p for p in problems if p.startswith(_UNKNOWN_TOP)]  # extra top-level keys: said, not fatal
    if len(notes) < len(problems):
        problems = [p for p in problems if p not in notes]
        raise DataError(f"Manifest '{path}' has {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    for note in notes:
        logger.warning("Manifest '%s': %s", path, note)
    return entries


def _entries(path: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Case entries (absolute paths) and the problems found without reading any image."""
    path = Path(path).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"Cannot read manifest '{path}': {error}") from error
    cases = data.get("cases") if isinstance(data, dict) else None
    if not isinstance(cases, list) or not cases:
        raise DataError(f"Manifest '{path}' needs a non-empty list under \"cases\".")
    problems: list[str] = []
    unknown_top = sorted(set(data) - {"cases", "version", "description", "name"})
    if unknown_top:
        problems.append(f'{_UNKNOWN_TOP} {unknown_top} (a manifest holds "cases"; a typo?)')
    seen: set[str] = set()
    out = []
    for n, case in enumerate(cases):
        name = case.get("id", f"#{n + 1}") if isinstance(case, dict) else f"#{n + 1}"
        if not isinstance(case, dict):
            problems.append(f"case {name}: not a JSON object")
            continue
        unknown = sorted(set(case) - _CASE_KEYS)
        if unknown:
            problems.append(f"case {name}: unknown keys {unknown}")
        if isinstance(case.get("id"), int) and not isinstance(case["id"], bool):
            case = {**case, "id": str(case["id"])}  # numeric ids are names too
        for key in ("id", "image", "label"):
            if key not in case:
                problems.append(f"case {name}: missing '{key}'")
            elif not isinstance(case[key], str) or not case[key]:
                what = "a name (text or a number)" if key == "id" else "a file name (text)"
                problems.append(f"case {name}: '{key}' must be {what}, got {case[key]!r}")
        if isinstance(case.get("id"), str):
            if case["id"] in seen:
                problems.append(f"case {name}: the id is used by another case; give each case its own id")
            seen.add(case["id"])
        structures = case.get("structures", {"structure": 1})
        if not isinstance(structures, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in structures.items()
        ):
            problems.append(f"case {name}: 'structures' must map names to label values, got {structures!r}")
        entry = dict(case)
        for key in ("image", "label"):
            if isinstance(case.get(key), str) and case[key]:
                file = (path.parent / case[key]).resolve()
                entry[key] = str(file)
                if not file.exists():
                    problems.append(f"case {name}: {key} file '{file}' does not exist")
        entry.setdefault("structures", {"structure": 1})
        out.append(entry)
    return out, problems


#: How a problem about unknown top-level keys starts (reported by the check, only a warning when training).
_UNKNOWN_TOP = "unknown top-level keys"

#: Suffixes a label file may add to its image's name (``case01_label.nii.gz`` for ``case01.nii.gz``).
LABEL_NAME_SUFFIXES = ("", "_label", "-label", "_labels", "-labels", "_seg", "-seg", "_mask", "-mask", ".seg")


def build_manifest(
    images: str | Path,
    labels: str | Path,
    *,
    structures: dict[str, int] | None = None,
    fully_labelled: bool = False,
) -> dict[str, Any]:
    """A manifest pairing every image in ``images`` with its label in ``labels`` by file name.

    A label matches an image when its name is the image's name, optionally followed by one of
    :data:`LABEL_NAME_SUFFIXES` (any image or picture format on either side). Without
    ``structures``, a case whose label is a mask picture gets the one non-zero value its mask holds
    (255 for 0/255 masks, 1 for 0/1 and 1-bit masks; see :func:`picture_mask_values`), and is fully
    labelled: the mask is the ground truth of the picture, so an empty mask is a true negative.

    Raises:
        DataError: A missing folder, an image without a label, a label without an image, a mask
            picture with several non-zero values and no ``structures`` (all listed).
    """
    images, labels = Path(images).expanduser(), Path(labels).expanduser()
    problems = [f"folder '{f}' does not exist" for f in (images, labels) if not f.is_dir()]
    if problems:
        raise DataError("Cannot build a manifest:\n  " + "\n  ".join(problems))

    def files(folder: Path) -> dict[str, Path]:
        return {case_name(p): p for p in sorted(folder.iterdir()) if p.name.lower().endswith(READ_SUFFIXES)}

    image_files, label_files = files(images), files(labels)
    cases, used = [], set()
    for name, image in image_files.items():
        match = next((label_files[name + s] for s in LABEL_NAME_SUFFIXES if name + s in label_files), None)
        if match is None:
            problems.append(f"image '{image.name}' has no label in '{labels}'")
            continue
        used.add(match)
        case_structures = dict(structures or {"structure": 1})
        picture = is_picture(match)  # a mask picture labels its one slice: the case is fully labelled
        if structures is None and picture:
            try:
                case_structures = _picture_structures(match)
            except DataError as error:
                problems.append(str(error))
        cases.append({
            "id": name, "image": str(image.resolve()), "label": str(match.resolve()),
            "structures": case_structures, "fully_labelled": fully_labelled or picture,
        })  # fmt: skip
    problems += [f"label '{p.name}' has no image in '{images}'" for p in label_files.values() if p not in used]
    if not image_files:
        problems.append(f"no image file in '{images}' (looked for {', '.join(READ_SUFFIXES)})")
    if problems:
        raise DataError(f"Cannot build a manifest ({len(problems)} problem(s)):\n  " + "\n  ".join(problems))
    return {"cases": cases}


def picture_mask_values(path: str | Path) -> list[int]:
    """The non-zero values of a mask picture, as :func:`samtune.data.image_io.read_label` reads it."""
    import numpy as np

    from samtune.data.image_io import read_label

    return [int(v) for v in np.unique(read_label(path).array) if v != 0]


def _picture_structures(mask: Path) -> dict[str, int]:
    """``{"structure": value}`` for a mask picture with one non-zero value (an empty mask: 255, the usual
    picture convention; its value does not matter, it has no foreground)."""
    try:
        values = picture_mask_values(mask)
    except SAMTuneError as error:
        raise DataError(f"label '{mask.name}': {error}") from error
    if len(values) > 1:
        shown = ", ".join(str(v) for v in values[:8]) + (", ..." if len(values) > 8 else "")
        raise DataError(
            f"label '{mask.name}' holds several values ({shown}): say which value is which structure with "
            "--structure NAME=VALUE (repeatable), e.g. --structure lesion=255."
        )
    return {"structure": values[0] if values else 255}


def label_file_for(image: str | Path) -> Path | None:
    """The label map lying beside ``image`` by the naming rule of :func:`build_manifest`, if any.

    ``heart.nii.gz`` finds ``heart_label.nii.gz``, ``heart-seg.nrrd``, ``heart.seg.nrrd`` and so on
    (never the image itself).
    """
    image = Path(image).expanduser()
    name = case_name(image)
    siblings: dict[str, Path] = {}
    for p in sorted(image.parent.iterdir()):
        if p != image and p.is_file() and p.name.lower().endswith(READ_SUFFIXES):
            # a same-named file counts only as a Slicer segmentation (heart.seg.nrrd beside heart.nrrd)
            key = case_name(p) + (".seg" if p.name.lower().endswith(".seg.nrrd") else "")
            siblings[key] = p
    return next((siblings[name + s] for s in LABEL_NAME_SUFFIXES if s and name + s in siblings), None)


def validate_manifest(path: str | Path) -> list[str]:
    """Every problem of a manifest: its structure, missing files, unreadable images and labels,
    label grids that differ from their image's, structures whose value is absent (an empty mask
    picture is a negative example, not a problem). Empty when fine.
    """
    import numpy as np

    from samtune.data.image_io import read_label, read_volume

    try:
        entries, problems = _entries(path)
    except DataError as error:
        return [str(error)]
    for entry in entries:
        if not all(isinstance(entry.get(k), str) and Path(entry[k]).exists() for k in ("image", "label")):
            continue  # already reported
        try:
            image = read_volume(entry["image"])
            label = read_label(entry["label"], reference=image)
        except SAMTuneError as error:
            problems.append(f"case {entry.get('id')}: {error}")
            continue
        present = None
        if is_picture(entry["label"]) and not label.array.any():
            continue  # an empty mask picture shows no structure: a negative example, not a mistake
        for name, value in entry["structures"].items():
            if not (label.array == int(value)).any():
                if present is None:
                    present = [int(v) for v in np.unique(label.array) if v != 0]
                held = f"it holds {', '.join(map(str, present[:8]))}" if present else "it is empty"
                problems.append(
                    f"case {entry.get('id')}: structure '{name}' (value {value}) is not in the label map ({held})"
                )
    return problems


def cases_from_manifest(path: str | Path, *, structure: str | None = None) -> list[TrainingCase]:
    """Load every case of the manifest file ``path`` for one structure (see :func:`cases_from_entries`)."""
    return cases_from_entries(read_manifest(path), structure=structure)


def cases_from_entries(entries: list[dict[str, Any]], *, structure: str | None = None) -> list[TrainingCase]:
    """Load every case of manifest entries (as :func:`read_manifest` returns them) for one structure.

    Args:
        entries: The manifest's cases, with absolute paths.
        structure: Structure name to learn; may be omitted when the manifest names only one.

    Raises:
        DataError: Unreadable images, geometry mismatches, or an unknown/ambiguous structure (all
            problems listed together).
    """
    from samtune.data.image_io import read_label, read_volume
    from samtune.train.data import TrainingCase

    names = sorted({s for e in entries for s in e["structures"]})
    if structure is None:
        if len(names) > 1:
            raise DataError(f"The manifest has several structures {names}; choose one with --structure.")
        structure = names[0]
    cases, problems = [], []
    for entry in entries:
        if structure not in entry["structures"]:
            problems.append(f"case {entry['id']}: no structure '{structure}' (has {sorted(entry['structures'])})")
            continue
        try:
            image = read_volume(entry["image"])
            label = read_label(entry["label"], reference=image)
            cases.append(
                TrainingCase(
                    case_id=str(entry["id"]),
                    image=image,
                    label=label,
                    structure=structure,
                    value=int(entry["structures"][structure]),
                    fully_labelled=bool(entry.get("fully_labelled", False)),
                    empty_slices=[int(s) for s in entry.get("empty_slices", [])],
                )
            )
        except SAMTuneError as error:
            problems.append(f"case {entry['id']}: {error}")
    if problems:
        raise DataError(f"{len(problems)} case(s) cannot be used:\n  " + "\n  ".join(problems))
    return cases
