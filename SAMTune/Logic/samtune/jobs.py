"""Training and prediction jobs: one code path for the command line, the background worker and tests.

A job is a small JSON document (``docs/worker-protocol.md``)::

    {"version": 1, "kind": "train", "preset": "cpu_quick", "overrides": {"epochs": 5},
     "manifest": "cases.json", "run_dir": "runs/atrium"}
    {"version": 1, "kind": "predict", "image": "new.nii.gz", "out": "new-seg.nii.gz", "model": "runs/atrium/model"}

Relative paths are relative to the job file. Progress leaves through ``emit(event)``: dicts with a
``type`` (``started``, ``progress``, ``metrics``, ``checkpoint``, ``log``, ``finished``).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from samtune.config_io import config_from_dict, config_to_dict
from samtune.data.formats import WRITE_SUFFIXES
from samtune.errors import EXIT_CODES, ConfigurationError, OutputError, SAMTuneError
from samtune.events import PROTOCOL_VERSION, Emit, event_line

#: Label-map formats ``predict`` writes (MetaImage ``.mhd`` is two files and cannot be written atomically).
OUTPUT_SUFFIXES = WRITE_SUFFIXES


@dataclass
class TrainJob:
    """Fine-tune on the cases of a manifest and write a run folder with the model in it.

    Attributes:
        manifest: Training-data manifest (JSON).
        run_dir: Run folder to create (see :mod:`samtune.runs`).
        preset: Preset name; its configuration is the starting point.
        config: A full training configuration instead of (or on top of) the preset.
        overrides: Fields merged over the preset/config (``{"epochs": 5}``).
        structure: Structure to learn when the manifest has several.
        model_dir: Where the model folder goes (default ``RUN_DIR/model``).
        weights: Backbone weights file (default: bundled or cached).
        tiny: Dry run with a tiny random configuration of the backbone (seconds; the model is
            useless, but every file, event and checkpoint is real).
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
    kind: str = "train"
    version: int = PROTOCOL_VERSION

    def train_config(self) -> Any:
        """The resolved :class:`~samtune.train.TrainConfig`."""
        from samtune.config_io import merge_overrides
        from samtune.train.config import TrainConfig
        from samtune.train.presets import load_preset

        if self.preset is None and self.config is None:
            raise ConfigurationError("A training job needs a 'preset' or a 'config'. See `samtune presets`.")
        base = load_preset(self.preset).config if self.preset else {}
        return TrainConfig.from_dict(merge_overrides(merge_overrides(base, self.config or {}), self.overrides))


@dataclass
class PredictJob:
    """Segment one image with a backbone or a trained model folder.

    Attributes mirror ``samtune predict``'s options (``docs/cli.md``); ``box`` holds 3D boxes
    ``[i0, j0, k0, i1, j1, k1]``, ``point``/``neg_point`` voxels ``[i, j, k]``.
    """

    image: str
    out: str
    model: str = "litemedsam"
    weights: str | None = None
    device: str = "auto"
    box: list[list[float]] | None = None
    point: list[list[float]] | None = None
    neg_point: list[list[float]] | None = None
    axis: str = "auto"
    slices: list[int] | None = None
    threshold: float = 0.5
    batch_size: int = 1
    runtime: str = "auto"
    slice_search: int = 0
    largest_component: bool = False
    intensity: str = "auto"
    window: list[float] | None = None
    ct_preset: str = "soft_tissue"
    two_and_half_d: bool = False
    label_value: int = 1
    name: str = "Segment_1"
    kind: str = "predict"
    version: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        if self.slices is not None and len(self.slices) != 2:
            raise ConfigurationError(
                f"'slices' must be [start, stop] (stop exclusive), got {self.slices!r}. Give two slice indices."
            )
        if not 0.0 < float(self.threshold) < 1.0:
            raise ConfigurationError(f"'threshold' must be between 0 and 1 (exclusive), got {self.threshold!r}.")


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
        final: dict[str, Any] = {"type": "cancelled", "message": str(error), "signal": signal, "run_dir": resume_dir}
        if resume_dir:
            final["resume"] = f"python -m samtune.worker --resume {resume_dir}"
        return final
    return {"type": "error", "kind": error.kind, "message": str(error), "exit_code": EXIT_CODES[error.kind]}


def record_final_event(job: TrainJob | PredictJob | None, event: dict[str, Any]) -> None:
    """Add a training run's final event (``error``/``cancelled``) to its run folder's ``events.jsonl``.

    The worker and ``samtune train`` both call it, so the folder tells how the run ended (and a run
    that failed before its first checkpoint can be replaced, see :attr:`samtune.runs.RunFolder.never_trained`).
    """
    if isinstance(job, TrainJob):
        from samtune.runs import RunFolder

        folder = RunFolder(job.run_dir)
        if folder.job.is_file():
            folder.append_event(event_line(event))


def job_to_dict(job: TrainJob | PredictJob) -> dict[str, Any]:
    """The job as JSON data."""
    return config_to_dict(job)


# --- training -------------------------------------------------------------------------------------


def _portable(model_dir: Path, run_dir: Path) -> str:
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
    from samtune.runs import RunFolder

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


def run_train_job(
    job: TrainJob,
    *,
    emit: Emit,
    resume: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> Path:
    """Run a training job into its run folder; returns the model folder.

    With ``resume`` the run folder's own job and configuration are used and training continues
    from its newest intact checkpoint.

    Raises:
        SAMTuneError: Configuration, data, output, weights, device problems; ``TrainingCancelledError``
            when ``should_stop`` stopped it (a checkpoint is written first).
    """
    from samtune.runs import RunFolder
    from samtune.train.distributed import init_from_environment, shutdown
    from samtune.train.manifest import read_manifest

    run = RunFolder(job.run_dir)
    config = job.train_config()
    model_dir = Path(job.model_dir) if job.model_dir else run.model
    context = init_from_environment(config.device)  # torchrun: join the other processes
    main = context is None or context.is_main
    try:
        if main:  # only rank 0 checks, creates and writes the run folder
            run.check_start(resume=resume)
            if model_dir.exists() and any(model_dir.iterdir()):
                raise OutputError(f"Model folder '{model_dir}' already exists and is not empty. Choose a new one.")
            entries = read_manifest(job.manifest)  # every problem of the manifest, before any folder is made
            run.prepare(resume=resume)
            if not resume:  # paths relative to the run folder: a copied or moved run folder resumes where it is
                stored = job_to_dict(job)
                stored.update(run_dir=".", manifest=run.manifest.name, model_dir=_portable(model_dir, run.path))
                run.write_json(run.job, stored)
                run.write_json(run.config, config.to_dict())
                run.write_json(run.manifest, {"cases": entries})
        if context is not None:
            context.barrier()
        return _train_in_run_folder(job, run, config, model_dir, emit if main else None, resume, should_stop, context)
    finally:
        shutdown(context)


def _train_in_run_folder(
    job: TrainJob,
    run: Any,
    config: Any,
    model_dir: Path,
    emit: Emit | None,
    resume: bool,
    should_stop: Callable[[], bool] | None,
    context: Any,
) -> Path:
    from samtune.train.manifest import cases_from_manifest
    from samtune.train.run import fine_tune

    history: list[dict[str, Any]] = []

    def send(event: dict[str, Any]) -> None:
        if emit is not None:
            run.append_event(event_line(event))
            emit(event)

    def on_event(event: dict[str, Any]) -> None:
        if event["type"] == "metrics":
            row = {k: v for k, v in event.items() if k != "type"}
            history[:] = [h for h in history if h["epoch"] < row["epoch"]] + [row]
            run.write_metrics(history)
        send(event)

    send({"type": "started", "kind": "train", "run_dir": str(run.path), "resume": resume,
          "backbone": config.backbone, "method": config.finetune.method, "optimiser": config.optimiser,
          "processes": context.world_size if context is not None else 1})  # fmt: skip
    if resume and emit is not None:
        history.extend(_history_from_events(run.events))
    cases = cases_from_manifest(run.manifest if resume else job.manifest, structure=job.structure)
    started = time.perf_counter()

    def stop_requested() -> bool:
        return run.stop_file.exists() or (should_stop is not None and should_stop())

    try:
        outcome = fine_tune(
            cases,
            config,
            out_dir=model_dir,
            on_event=on_event if emit is not None else None,
            backbone_weights=job.weights,
            checkpoint_dir=run.checkpoints,
            resume=resume,
            should_stop=stop_requested,
            tiny=job.tiny,
            distributed=context,
        )
    except SAMTuneError as error:
        # The run folder keeps the story; the caller reports the error or cancellation itself.
        if emit is not None:
            run.append_log(f"{error.kind}: {error}")
        raise
    best = outcome.result.history[outcome.result.best_epoch - 1] if outcome.result.best_epoch else {}
    send({"type": "finished", "model": str(model_dir), "best_epoch": outcome.result.best_epoch,
          "metrics": best, "seconds": time.perf_counter() - started})  # fmt: skip
    return model_dir


def _history_from_events(path: Path) -> list[dict[str, Any]]:
    """Per-epoch metrics already recorded in ``events.jsonl`` (the last entry per epoch wins)."""
    if not path.is_file():
        return []
    by_epoch: dict[int, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line cut by a hard kill
        if event.get("event") == "metrics":
            by_epoch[int(event["epoch"])] = {k: v for k, v in event.items() if k not in ("v", "event", "time")}
    return [by_epoch[e] for e in sorted(by_epoch)]


# --- prediction -----------------------------------------------------------------------------------


def check_output_path(path: Path, *, inputs: Sequence[str | Path] = ()) -> None:
    """Fail early, before any computation, when ``path`` cannot be written or would replace an input.

    The folder is tested by creating (and removing) a file in it: permission bits do not tell
    (an administrator, a read-only mount, a full quota).

    Raises:
        OutputError: Unsupported suffix, missing or unwritable folder, or ``path`` is one of
            ``inputs`` (the same file by path, link or hard link).
    """
    name = path.name.lower()
    if not name.endswith(OUTPUT_SUFFIXES):
        raise OutputError(f"Cannot write '{path}': unsupported file type. Use one of {', '.join(OUTPUT_SUFFIXES)}.")
    if not path.parent.is_dir():
        raise OutputError(f"Cannot write '{path}': the folder '{path.parent}' does not exist. Create it first.")
    for source in inputs:  # the same path, through a link, or a hard link of it
        if Path(source).resolve() == path.resolve() or (path.exists() and os.path.samefile(source, path)):
            raise OutputError(
                f"--out '{path}' is the input image '{source}': the label map would replace your image. "
                "Choose another output file."
            )
    try:
        handle, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".check", dir=path.parent)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise OutputError(
            f"Cannot write '{path}': the folder '{path.parent}' is not writable ({error.strerror}). "
            "Choose a folder you can write to."
        ) from error


def run_predict_job(job: PredictJob, *, emit: Emit, should_stop: Callable[[], bool] | None = None) -> Path:
    """Segment ``job.image`` and write ``job.out``; returns the output path.

    Raises:
        CancelledError: ``should_stop`` said so (checked after every slice); ``job.out`` is not written.
    """
    from samtune.data import IntensityConfig, SliceConfig, read_volume, resolve_axis, write_label
    from samtune.errors import CancelledError
    from samtune.models import build_model, get_backbone, resolve_device
    from samtune.predict import (
        PredictConfig,
        box_prompts_from_ijk,
        merge_prompts,
        point_prompts_from_ijk,
        predict_volume,
    )

    out = Path(job.out)
    check_output_path(out, inputs=[job.image])
    trained = Path(job.model).is_dir()
    if not trained:
        get_backbone(job.model)  # an unknown name fails before any reading
    intensity = IntensityConfig(
        mode=job.intensity,
        ct_preset=job.ct_preset,
        window_low=job.window[0] if job.window else None,
        window_high=job.window[1] if job.window else None,
    )
    slices = SliceConfig(axis=job.axis, intensity=intensity, two_and_half_d=job.two_and_half_d)
    config = PredictConfig(
        threshold=job.threshold,
        batch_size=job.batch_size,
        runtime=job.runtime,
        slice_search=job.slice_search,
        largest_component=job.largest_component,
        slice_range=tuple(job.slices) if job.slices else None,  # type: ignore[arg-type]
        slices=slices,
        label_value=job.label_value,
    )
    device = resolve_device(job.device)
    image = read_volume(job.image)
    axis = resolve_axis(image, slices.axis)
    prompts = None
    if job.box or job.point or job.neg_point:
        maps = []
        if job.box:
            maps.append(box_prompts_from_ijk([tuple(b) for b in job.box], axis=axis, shape=image.shape))
        points = [tuple(p) for p in (job.point or []) + (job.neg_point or [])]
        labels = [1] * len(job.point or []) + [0] * len(job.neg_point or [])
        if points:
            maps.append(point_prompts_from_ijk(points, labels, axis=axis, shape=image.shape[:3]))
        prompts = merge_prompts(*maps)
    name = job.name
    if trained:
        from samtune.io.model_folder import load_trained_model

        model, card = load_trained_model(job.model, device=device, backbone_weights=job.weights)
        if name == "Segment_1":
            name = card.get("structure", name)
    else:
        model = build_model(job.model, weights=job.weights, device=device)
    mode = "prompted" if prompts is not None else "automatic"
    emit({"type": "started", "kind": "predict", "image": job.image, "model": job.model, "device": str(device),
          "mode": mode})  # fmt: skip
    started = time.perf_counter()

    def progress(done: int, total: int, message: str = "") -> None:
        if should_stop is not None and should_stop():
            raise CancelledError(f"Segmentation was cancelled after {done} of {total} slices; nothing was written.")
        emit({"type": "progress", "stage": "predict", "step": done, "total": total, "message": message})

    label = predict_volume(model, image, config, prompts=prompts, progress=progress)
    n_fg = int((label.array != 0).sum())
    write_label(label, out, segment_names={name: job.label_value})
    if n_fg == 0 and prompts is None and not trained:
        emit({"type": "log", "level": "warning", "message": (
            "The prediction is empty: pretrained backbones segment nothing without prompts. "
            "Give a box or point, or use a fine-tuned model.")})  # fmt: skip
    emit({"type": "finished", "output": str(out), "foreground_voxels": n_fg,
          "seconds": time.perf_counter() - started})  # fmt: skip
    return out


__all__ = [
    "OUTPUT_SUFFIXES",
    "PROTOCOL_VERSION",
    "PredictJob",
    "TrainJob",
    "check_output_path",
    "job_from_dict",
    "job_to_dict",
    "load_job",
    "load_run_job",
    "record_final_event",
    "run_predict_job",
    "run_train_job",
    "terminal_event",
]
