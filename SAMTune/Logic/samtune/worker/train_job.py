"""Running a training job: the run folder, the manifest read once, the events on their way out.

``run_train_job`` is the one path from a :class:`~samtune.worker.jobs.TrainJob` to
:func:`samtune.train.fine_tune`, for the worker, ``samtune train`` and tests.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from samtune.errors import OutputError, SAMTuneError
from samtune.worker.events import Emit, event_line
from samtune.worker.jobs import PredictJob, TrainJob, job_to_dict, portable_model_dir
from samtune.worker.run_folder import RunFolder


def record_final_event(job: TrainJob | PredictJob | None, event: dict[str, Any]) -> None:
    """Add a training run's final event (``error``/``cancelled``) to its run folder's ``events.jsonl``.

    The worker and ``samtune train`` both call it, so the folder tells how the run ended (and a run
    that failed before its first checkpoint can be replaced, see :attr:`RunFolder.never_trained`).
    """
    if isinstance(job, TrainJob):
        folder = RunFolder(job.run_dir)
        if folder.job.is_file():
            folder.append_event(event_line(event))


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
    from samtune.train.distributed import init_from_environment, shutdown
    from samtune.train.manifest import read_manifest, write_manifest

    run = RunFolder(job.run_dir)
    config = job.train_config()
    model_dir = Path(job.model_dir) if job.model_dir else run.model
    context = init_from_environment(config.device)  # torchrun: join the other processes
    main = context is None or context.is_main
    try:
        if main:
            run.check_start(resume=resume)
            if model_dir.exists() and any(model_dir.iterdir()):
                raise OutputError(f"Model folder '{model_dir}' already exists and is not empty. Choose a new one.")
        # read once (a resumed job's manifest is the run folder's copy); every problem before any folder is made
        entries = read_manifest(run.manifest if resume else job.manifest)
        if main:  # only rank 0 creates and writes the run folder
            run.prepare(resume=resume)
            if not resume:  # paths relative to the run folder: a copied or moved run folder resumes where it is
                stored = job_to_dict(job)
                stored.update(
                    run_dir=".", manifest=run.manifest.name, model_dir=portable_model_dir(model_dir, run.path)
                )
                run.write_json(run.job, stored)
                run.write_json(run.config, config.to_dict())
                write_manifest(run.manifest, entries)
        if context is not None:
            context.barrier()
        return _train_in_run_folder(
            job, entries, run, config, model_dir, emit if main else None, resume, should_stop, context
        )
    finally:
        shutdown(context)


def _train_in_run_folder(
    job: TrainJob,
    entries: list[dict[str, Any]],
    run: RunFolder,
    config: Any,
    model_dir: Path,
    emit: Emit | None,
    resume: bool,
    should_stop: Callable[[], bool] | None,
    context: Any,
) -> Path:
    from samtune.train.fine_tuning import fine_tune
    from samtune.train.manifest import cases_from_entries

    history: list[dict[str, Any]] = []

    def send(event: dict[str, Any]) -> None:
        if emit is not None:
            run.append_event(event_line(event))
            emit(event)

    def on_event(event: dict[str, Any]) -> None:
        if event["event"] == "metrics":
            row = {k: v for k, v in event.items() if k != "event"}
            history[:] = [h for h in history if h["epoch"] < row["epoch"]] + [row]
            run.write_metrics(history)
        send(event)

    send({"event": "started", "kind": "train", "run_dir": str(run.path), "resume": resume,
          "backbone": config.backbone, "method": config.finetune.method, "optimiser": config.optimiser,
          **({"parent": job.parent} if job.parent else {}),
          "processes": context.world_size if context is not None else 1})  # fmt: skip
    if resume and emit is not None:
        history.extend(_history_from_events(run.events))
    cases = cases_from_entries(entries, structure=job.structure)
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
            parent=job.parent,
        )
    except SAMTuneError as error:
        # The run folder keeps the story; the caller reports the error or cancellation itself.
        if emit is not None:
            run.append_log(f"{error.kind}: {error}")
        raise
    best = outcome.result.history[outcome.result.best_epoch - 1] if outcome.result.best_epoch else {}
    send({"event": "finished", "model": str(model_dir), "best_epoch": outcome.result.best_epoch,
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


__all__ = ["record_final_event", "run_train_job"]
