"""Training-data manifest (JSON): cases with image and label paths and their structures.

```json
{"cases": [{"id": "case01", "image": "images/case01.nii.gz", "label": "labels/case01.nii.gz",
            "structures": {"left atrium": 1}, "fully_labelled": true, "empty_slices": []}]}
```

Relative paths are relative to the manifest file. Every problem is reported at once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from samtune.data.io import read_label, read_volume
from samtune.errors import DataError, SAMTuneError
from samtune.train.data import TrainingCase

_CASE_KEYS = {"id", "image", "label", "structures", "fully_labelled", "empty_slices", "split"}


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    """The manifest's case entries with absolute paths.

    Raises:
        DataError: Unreadable JSON, unknown keys, missing fields or files (all listed together).
    """
    path = Path(path).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"Cannot read manifest '{path}': {error}") from error
    cases = data.get("cases") if isinstance(data, dict) else None
    if not isinstance(cases, list) or not cases:
        raise DataError(f"Manifest '{path}' needs a non-empty list under \"cases\".")
    problems: list[str] = []
    out = []
    for n, case in enumerate(cases):
        name = case.get("id", f"#{n + 1}") if isinstance(case, dict) else f"#{n + 1}"
        if not isinstance(case, dict):
            problems.append(f"case {name}: not a JSON object")
            continue
        unknown = sorted(set(case) - _CASE_KEYS)
        if unknown:
            problems.append(f"case {name}: unknown keys {unknown}")
        for key in ("id", "image", "label"):
            if key not in case:
                problems.append(f"case {name}: missing '{key}'")
        entry = dict(case)
        for key in ("image", "label"):
            if key in case:
                file = (path.parent / case[key]).resolve()
                entry[key] = str(file)
                if not file.exists():
                    problems.append(f"case {name}: {key} file '{file}' does not exist")
        entry.setdefault("structures", {"structure": 1})
        out.append(entry)
    if problems:
        raise DataError(f"Manifest '{path}' has {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    return out


def cases_from_manifest(path: str | Path, *, structure: str | None = None) -> list[TrainingCase]:
    """Load every case of the manifest for one structure.

    Args:
        path: Manifest file.
        structure: Structure name to learn; may be omitted when the manifest names only one.

    Raises:
        DataError: Unreadable images, geometry mismatches, or an unknown/ambiguous structure (all
            problems listed together).
    """
    entries = read_manifest(path)
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
