"""A training run's folder: everything needed to follow, reproduce and resume one run.

::

    RUN_DIR/
      job.json             the job as given (paths made absolute)
      config.json          the resolved training configuration
      manifest.json        the training cases (absolute paths)
      events.jsonl         every event, one JSON object per line (docs/worker-protocol.md)
      metrics.csv          one row per epoch
      training_curve.png   loss and validation Dice per epoch, redrawn after every epoch
      checkpoints/         resumable checkpoints + a hash-checked index
      model/               the trained model folder, when the run finishes
      run.log              human-readable log

Every file is replaced atomically (written beside, then renamed); ``events.jsonl`` is appended
line by line.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any

from samtune.atomic import as_if_created, atomic_write, atomic_write_bytes, atomic_write_text, umask_mode
from samtune.errors import OutputError

#: Free space a run folder needs before training starts (checkpoints, curves, the model).
MIN_FREE_BYTES = 200 * 1024 * 1024

#: The file a user (or a platform without signals) creates to ask the run to stop.
STOP_FILE = "STOP"


class RunFolder:
    """Paths and writers of one run folder.

    Args:
        path: The run folder.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser().resolve()
        self.checkpoints = self.path / "checkpoints"
        self.model = self.path / "model"
        self.events = self.path / "events.jsonl"
        self.metrics = self.path / "metrics.csv"
        self.curve = self.path / "training_curve.png"
        self.log = self.path / "run.log"
        self.job = self.path / "job.json"
        self.config = self.path / "config.json"
        self.manifest = self.path / "manifest.json"
        self.stop_file = self.path / STOP_FILE

    @property
    def never_trained(self) -> bool:
        """The folder holds a run that failed before its first checkpoint (bad data, a missing device):
        its last recorded event is an ``error``, and it has no checkpoint, metrics or model, so nothing
        in it is worth keeping and a new run may replace it. A run still starting (no final event) or
        any other folder does not count."""
        has_checkpoint = self.checkpoints.is_dir() and any(self.checkpoints.iterdir())
        if not self.job.is_file() or has_checkpoint or self.metrics.is_file() or self.model.exists():
            return False
        try:
            lines = self.events.read_text(encoding="utf-8").splitlines()
            return bool(lines) and json.loads(lines[-1]).get("event") == "error"
        except (OSError, ValueError, AttributeError):
            return False

    def check_start(self, *, resume: bool) -> None:
        """Refuse a new run into a non-empty folder, or a resume where there is no run (creates nothing).

        A folder holding a run that never trained (:attr:`never_trained`) does not count as taken.

        Raises:
            OutputError: With the command that does what was probably meant.
        """
        if resume:
            if not self.job.is_file():
                raise OutputError(
                    f"Cannot resume '{self.path}': it holds no job.json, so it is not a SAMTune run folder."
                )
        elif self.never_trained:
            return
        elif self.path.is_file() or (self.path.is_dir() and any(self.path.iterdir())):
            raise OutputError(
                f"Run folder '{self.path}' already exists and is not empty. Choose a new folder, or resume it "
                f"(samtune train --resume {self.path})."
            )

    def prepare(self, *, resume: bool) -> None:
        """Create (or, to resume, check) the folder and make sure it can be written.

        Raises:
            OutputError: A new run into a non-empty folder, a resume without a run there, a folder
                that cannot be created or written, or less free space than :data:`MIN_FREE_BYTES`.
        """
        self.check_start(resume=resume)
        if not resume and self.never_trained:  # a failed start: clear it for the new run
            for stale in (self.job, self.config, self.manifest, self.events, self.log, self.curve, self.stop_file):
                stale.unlink(missing_ok=True)
            if self.checkpoints.is_dir():
                shutil.rmtree(self.checkpoints)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as error:
            raise OutputError(
                f"Cannot write the run folder '{self.path}': {error}. Choose a folder you can write to."
            ) from error
        free = shutil.disk_usage(self.path).free
        if free < MIN_FREE_BYTES:
            raise OutputError(
                f"Only {free / 2**20:.0f} MB free where the run folder '{self.path}' is; a run needs at least "
                f"{MIN_FREE_BYTES / 2**20:.0f} MB for checkpoints and the model. Free space or choose another disk."
            )
        self.stop_file.unlink(missing_ok=True)

    def write_json(self, path: Path, data: Any) -> None:
        """Write ``data`` as indented JSON, atomically."""
        atomic_write_text(path, json.dumps(data, indent=2) + "\n")

    def append_event(self, line: str) -> None:
        """Append one serialised event to ``events.jsonl``."""
        with open(self.events, "a", encoding="utf-8") as stream:
            stream.write(line + "\n")

    def append_log(self, message: str) -> None:
        """Append a line to ``run.log``."""
        with open(self.log, "a", encoding="utf-8") as stream:
            stream.write(message.rstrip("\n") + "\n")

    def write_metrics(self, history: list[dict[str, Any]]) -> None:
        """Rewrite ``metrics.csv`` (one row per epoch) and ``training_curve.png`` from ``history``."""
        columns: list[str] = []
        for row in history:
            columns.extend(k for k in row if k not in columns and k != "event")
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)
        atomic_write_text(self.metrics, buffer.getvalue())
        self._plot(history)

    def _plot(self, history: list[dict[str, Any]]) -> None:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure

        epochs = [row["epoch"] for row in history]
        figure = Figure(figsize=(7, 3.2), dpi=100)
        loss_axes, dice_axes = figure.subplots(1, 2)
        loss_axes.plot(epochs, [row["loss"] for row in history], marker="o", label="training loss")
        if any("upper_loss" in row for row in history):
            loss_axes.plot(epochs, [row.get("upper_loss") for row in history], marker="o", label="D2 loss (prompt)")
        loss_axes.set_xlabel("epoch")
        loss_axes.set_title("Loss")
        loss_axes.legend(fontsize=8)
        for key, label in (("val_dice", "validation Dice"), ("d2_dice", "D2 Dice")):
            if any(key in row for row in history):
                dice_axes.plot(epochs, [row.get(key) for row in history], marker="o", label=label)
        dice_axes.set_ylim(0, 1)
        dice_axes.set_xlabel("epoch")
        dice_axes.set_title("Foreground Dice")
        if dice_axes.lines:
            dice_axes.legend(fontsize=8)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        atomic_write_bytes(self.curve, buffer.getvalue())


__all__ = [
    "MIN_FREE_BYTES",
    "STOP_FILE",
    "RunFolder",
    "as_if_created",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "umask_mode",
]
