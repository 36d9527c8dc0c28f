"""Resumable training checkpoints, written so that a half-written file is never taken for a good one.

Each checkpoint is one ``torch.save`` file written to a temporary name, flushed to disk, then
renamed. Its SHA-256 goes into ``index.json`` (itself replaced atomically) only after the rename, so
a run killed at any moment leaves either a complete, indexed checkpoint or an unindexed one that is
ignored. Loading walks the index from the newest entry back and skips any file that is missing or
whose hash does not match (a truncated or damaged write), saying so. Files are read with
``torch.load(weights_only=True)``: no pickled code is ever run.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from samtune.atomic import atomic_write
from samtune.errors import OutputError
from samtune.models.weights import sha256_file

logger = logging.getLogger(__name__)

INDEX = "index.json"


class CheckpointStore:
    """A folder of training checkpoints with a hash-checked index.

    Args:
        folder: Where checkpoints live (created if missing).
        keep: How many of the newest checkpoints to keep (at least 2, so a damaged newest one
            always has a predecessor).
    """

    def __init__(self, folder: str | Path, *, keep: int = 2) -> None:
        self.folder = Path(folder)
        self.keep = max(2, int(keep))
        #: Messages about checkpoints :meth:`load_latest` had to skip.
        self.skipped: list[str] = []
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(f"Cannot create the checkpoint folder '{self.folder}': {error}") from error

    def entries(self) -> list[dict[str, Any]]:
        """Index entries, oldest first (empty when there is no readable index)."""
        path = self.folder / INDEX
        if not path.is_file():
            return []
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return list(data["checkpoints"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            logger.warning("Checkpoint index %s is unreadable (%s); no checkpoint is used.", path, error)
            return []

    def save(self, state: dict[str, Any], *, step: int, reason: str) -> Path:
        """Write ``state`` as checkpoint ``step`` and index it; older ones beyond ``keep`` are removed.

        Raises:
            OutputError: The disk is full or the folder is not writable (nothing is indexed then).
        """
        name = f"checkpoint-{int(step):08d}.pt"
        path = self.folder / name
        try:
            atomic_write(path, lambda stream: torch.save(state, stream))
            entry = {"file": name, "sha256": sha256_file(path), "step": int(step), "reason": reason}
            entries = [e for e in self.entries() if e.get("file") != name] + [entry]
            dropped, entries = entries[: -self.keep], entries[-self.keep :]
            text = json.dumps({"checkpoints": entries}, indent=2).encode("utf-8")
            atomic_write(self.folder / INDEX, lambda stream: stream.write(text))
        except OSError as error:
            raise OutputError(
                f"Cannot write checkpoint '{path}': {error}. Free disk space or choose another run folder."
            ) from error
        for old in dropped:
            (self.folder / str(old.get("file"))).unlink(missing_ok=True)
        return path

    def load_latest(self) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """``(state, index entry)`` of the newest intact checkpoint, or ``None`` when there is none.

        Damaged or missing files are skipped with a warning (their predecessor is used).
        """
        self.skipped = []
        for entry in reversed(self.entries()):
            path = self.folder / str(entry.get("file"))
            problem = None
            if not path.is_file():
                problem = "is missing"
            elif sha256_file(path) != entry.get("sha256"):
                problem = "is damaged (its SHA-256 differs from the one recorded when it was written)"
            else:
                try:
                    return torch.load(path, map_location="cpu", weights_only=True), entry
                except Exception as error:  # noqa: BLE001 - any unreadable file means "use the previous one"
                    problem = f"cannot be read ({error})"
            message = f"Checkpoint {path.name} {problem}; using the previous one."
            logger.warning(message)
            self.skipped.append(message)
        return None


__all__ = ["CheckpointStore"]
