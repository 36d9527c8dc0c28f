"""Job documents: what the command line, the background worker, the Slicer module and tests ask for.

A job is a small JSON document (``docs/worker-protocol.md``)::

    {"version": 1, "kind": "train", "preset": "cpu_quick", "overrides": {"epochs": 5},
     "manifest": "cases.json", "run_dir": "runs/atrium"}
    {"version": 1, "kind": "predict", "image": "new.nii.gz", "out": "new-seg.nii.gz", "model": "runs/atrium/model",
     "prompts": {"box": [[10, 12, 3, 40, 44, 9]]}, "predict": {"threshold": 0.5, "slices": {"axis": "k"}}}

Relative paths are relative to the job file. Running a job is :mod:`samtune.worker.train_job` and
:mod:`samtune.worker.predict_job`; progress leaves through ``emit(event)``: dicts whose ``event`` key
names the type (``started``, ``progress``, ``metrics``, ``checkpoint``, ``log``, ``finished``), as on the wire.
Importing this module costs no PyTorch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from samtune.config_io import config_from_dict, config_to_dict, option
from samtune.data.formats import OUTPUT_SUFFIXES
from samtune.errors import EXIT_CODES, ConfigurationError, OutputError, SAMTuneError
from samtune.predict.config import PredictConfig, PromptSpec
from samtune.worker.events import PROTOCOL_VERSION


@dataclass
class TrainJob:
    """Fine-tune on the cases of a manifest and write a run folder with the model in it.

    Attributes:
        manifest: Training-data manifest (JSON).
        run_dir: Run folder to create (see :mod:`samtune.worker.run_folder`).
        preset: Preset name; its configuration is the starting point.
        config: A full training configuration instead of (or on top of) the preset.
        overrides: Only the fields that differ from the preset (``{"epochs": 5}``).
        structure: Structure to learn when the manifest has several.
        model_dir: Where the model folder goes (default ``RUN_DIR/model``).
        weights: Backbone weights file (default: bundled or cached).
        tiny: Dry run with a tiny random configuration of the backbone (seconds; the model is
            useless, but every file, event and checkpoint is real).
        parent: A model folder to retrain (warm start): its weights are the first step's, and
            without ``preset`` or ``config`` its own training settings are the starting point
            (``overrides`` on top). The new model's card links it.
    """

    manifest: str
    run_dir: str
    preset: str | None = None
    config: dict[str, Any] | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    structure: str | None = None
    model_dir: str | None = None
    weights: str | None = None
    tiny: bool = False
    parent: str | None = None
    kind: str = "train"
    version: int = PROTOCOL_VERSION

    def train_config(self) -> Any:
        """The resolved :class:`~samtune.train.TrainConfig` (:func:`samtune.train.presets.resolve_train_config`);
        a retrain without a preset or configuration starts from its parent's settings."""
        from samtune.train.presets import resolve_train_config

        config = self.config
        if self.parent is not None and self.preset is None and config is None:
            from samtune.library.card import read_model_card

            config = read_model_card(self.parent).get("training")
        return resolve_train_config(self.preset, config=config, overrides=self.overrides)


@dataclass
class PredictJob:
    """Segment one image with a backbone or a trained model folder.

    The fields (nested ones included) are ``samtune predict``'s options (``docs/cli.md``).
    """

    image: str = option(
        help="input image: NIfTI, NRRD, MHA, a DICOM folder, PNG/JPEG/BMP/TIFF, or a folder of pictures", required=True
    )
    out: str = option(
        help=f"output label map ({', '.join(OUTPUT_SUFFIXES)}; its folder must exist), or for a folder of pictures "
        "the folder for their masks (same names, PNG for JPEG; 0/255)",
        required=True,
    )
    model: str = option("litemedsam", help="backbone name (see `samtune models`) or a trained model folder")
    weights: str | None = option(None, help="weights file for the backbone (overrides the bundled/cached one)")
    device: str = option("auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    name: str = option("Segment_1", help="segment name stored in a .seg.nrrd output (a model folder: its structure)")
    prompts: PromptSpec | None = None
    predict: PredictConfig = field(default_factory=PredictConfig)
    kind: str = "predict"
    version: int = PROTOCOL_VERSION

    @property
    def mode(self) -> str:
        """``prompted`` or ``automatic``."""
        return "automatic" if self.prompts is None or self.prompts.is_empty else "prompted"


#: Keys of the flat prediction job (before the nested one) and where each lives now.
_MOVED = {
    "box": "prompts.box", "point": "prompts.point", "neg_point": "prompts.neg_point", "axis": "predict.slices.axis",
    "slices": "predict.slice_range", "threshold": "predict.threshold", "batch_size": "predict.batch_size",
    "runtime": "predict.runtime", "slice_search": "predict.slice_search",
    "largest_component": "predict.largest_component", "intensity": "predict.slices.intensity.mode",
    "window": "predict.slices.intensity.window_low / window_high", "ct_preset": "predict.slices.intensity.ct_preset",
    "two_and_half_d": "predict.slices.two_and_half_d", "label_value": "predict.label_value",
}  # fmt: skip


def load_job(path: str | Path) -> TrainJob | PredictJob:
    """Read a job file; relative paths become relative to its folder.

    Raises:
        ConfigurationError: Unreadable or malformed JSON (with line and column), an unknown kind or
            version, unknown keys (named), missing required keys.
    """
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigurationError(f"Cannot read job file '{path}': {error}") from error
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigurationError(
            f"Job file '{path}' is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}."
        ) from error
    return job_from_dict(data, base=path.parent, where=str(path))


def job_from_dict(data: Any, *, base: Path | None = None, where: str = "job") -> TrainJob | PredictJob:
    """Build a job from its JSON object (see :func:`load_job`)."""
    if not isinstance(data, dict):
        raise ConfigurationError(f"{where}: a job is a JSON object, got {type(data).__name__}.")
    kinds: dict[str, type[TrainJob] | type[PredictJob]] = {"train": TrainJob, "predict": PredictJob}
    kind = data.get("kind")
    if kind not in kinds:
        raise ConfigurationError(f"{where}: 'kind' must be 'train' or 'predict', got {kind!r}.")
    version = data.get("version", PROTOCOL_VERSION)
    if version != PROTOCOL_VERSION:
        raise ConfigurationError(
            f"{where}: job version {version} is not supported; this SAMTune reads version {PROTOCOL_VERSION}."
        )
    cls = kinds[kind]
    missing = [f for f in (("manifest", "run_dir") if cls is TrainJob else ("image", "out")) if f not in data]
    if missing:
        raise ConfigurationError(f"{where}: a {kind} job needs {', '.join(repr(m) for m in missing)}.")
    moved = [f"'{key}' is now '{_MOVED[key]}'" for key in data if cls is PredictJob and key in _MOVED]
    if moved:
        raise ConfigurationError(
            f"{where}: this is a prediction job in the older flat form; {', '.join(moved)} "
            "(see docs/worker-protocol.md)."
        )
    job = config_from_dict(cls, data, where=where)  # type: ignore[type-var]
    if base is not None:
        keys = ("manifest", "run_dir", "model_dir", "weights") if cls is TrainJob else ("image", "out", "weights")
        for key in keys:
            value = getattr(job, key)
            if value is not None:
                setattr(job, key, str((base / value).resolve()))
        if isinstance(job, PredictJob) and Path(job.model).suffix == "" and (base / job.model).is_dir():
            job.model = str((base / job.model).resolve())
    return job


def terminal_event(
    error: SAMTuneError, job: TrainJob | PredictJob | None, *, signal: str | None = None
) -> dict[str, Any]:
    """The protocol's last event for a job that ended with ``error``: ``cancelled`` or ``error``.

    The worker and ``samtune train/predict --events`` both end with it, so a consumer of either
    reads the same last line.
    """
    if error.kind == "cancelled":
        resume_dir = job.run_dir if isinstance(job, TrainJob) else ""
        final: dict[str, Any] = {"event": "cancelled", "message": str(error), "signal": signal, "run_dir": resume_dir}
        if resume_dir:
            final["resume"] = f"python -m samtune.worker --resume {resume_dir}"
        return final
    return {"event": "error", "kind": error.kind, "message": str(error), "exit_code": EXIT_CODES[error.kind]}


def job_to_dict(job: TrainJob | PredictJob) -> dict[str, Any]:
    """The job as JSON data."""
    return config_to_dict(job)


# --- run folders --------------------------------------------------------------------------------


def portable_model_dir(model_dir: Path, run_dir: Path) -> str:
    """The model folder as the run's ``job.json`` stores it: relative when it lies inside the run folder or
    beside it (so a copied pair stays a pair), else absolute (another drive, or far away)."""
    try:
        relative = os.path.relpath(Path(model_dir).resolve(), run_dir)
    except ValueError:  # Windows: another drive
        return str(Path(model_dir).resolve())
    ups = [n for n, part in enumerate(Path(relative).parts) if part == ".."]
    return relative if ups in ([], [0]) else str(Path(model_dir).resolve())


def load_run_job(run_dir: str | Path, *, device: str | None = None) -> TrainJob:
    """The job of the run folder ``run_dir``, to resume it where the folder is now.

    The folder given wins over the one recorded (a copied run never writes into its original), and
    ``device`` replaces the recorded device (a run started on a GPU that is not there can go on on
    the CPU).

    Raises:
        OutputError: ``run_dir`` is not a run folder.
    """
    from samtune.worker.run_folder import RunFolder

    folder = RunFolder(run_dir)
    if not folder.job.is_file():
        raise OutputError(f"Cannot resume '{folder.path}': it holds no job.json (not a SAMTune run folder).")
    job = load_job(folder.job)
    if not isinstance(job, TrainJob):
        raise OutputError(f"Cannot resume '{folder.path}': its job.json is a {job.kind} job, not a training run.")
    job.run_dir = str(folder.path)
    if device:
        job.overrides = {**job.overrides, "device": device}
    return job


__all__ = [
    "PROTOCOL_VERSION",
    "PredictJob",
    "TrainJob",
    "job_from_dict",
    "job_to_dict",
    "load_job",
    "load_run_job",
    "portable_model_dir",
    "terminal_event",
]
