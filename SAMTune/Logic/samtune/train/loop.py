"""The fit loop: epochs of planned steps, progress and metrics events, the best model, early stopping,
periodic and cancel checkpoints, resume where a checkpoint left off.

The loop drives a :class:`~samtune.train.trainer.Trainer` (or the bi-level one) through its hooks:
``_epoch_plan`` (the epoch's batches), ``_run_step`` (one optimiser step), ``_epoch_metrics``
(validation), ``_score`` (what "best" maximises) and ``_groups`` (learning rates to report). Its
position lives in the trainer's typed :class:`~samtune.train.state.TrainingState`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from samtune.errors import OutOfMemoryError, TrainingCancelledError
from samtune.train.state import TrainingState, TrainResult, trainable_state

if TYPE_CHECKING:
    from samtune.train.trainer import Trainer

#: ``checkpoint(training_state, reason)``; reason ``periodic`` or ``cancelled``.
Checkpoint = Callable[[dict[str, Any], str], None]


def run_epochs(
    trainer: Trainer,
    *,
    checkpoint: Checkpoint | None = None,
    resume: dict[str, Any] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train ``trainer`` for ``trainer.epochs`` (or until early stopping) and return the best model's state.

    Args:
        checkpoint: Called as ``checkpoint(training_state, reason)`` at the end of every
            ``checkpoint_every``-th epoch (reason ``"periodic"``) and when stopped (``"cancelled"``).
        resume: A :meth:`~samtune.train.trainer.Trainer.training_state` to continue from (same configuration and data).
        should_stop: Polled after every step; when it returns True the run finishes that step,
            writes a checkpoint and raises :class:`TrainingCancelledError`.

    Raises:
        TrainingDivergedError: NaN or infinite loss.
        OutOfMemoryError: The GPU ran out of memory (with what to change).
        TrainingCancelledError: ``should_stop`` asked the run to stop.
    """
    config = trainer.config
    if resume is not None:
        trainer.load_training_state(resume)
    else:
        torch.manual_seed(config.seed)  # noisy gates (Conv-LoRA) draw from the global generator
        trainer.state = TrainingState.start(trainer.model)
    state, result = trainer.state, trainer.state.result
    started = time.perf_counter()
    first_step = state.step
    stop = False
    while state.epoch <= trainer.epochs:
        epoch = state.epoch
        epoch_started = time.perf_counter()
        if state.plan is None:
            state.begin_epoch(trainer._epoch_plan(epoch))
        plan = state.plan
        assert plan is not None
        while state.position < len(plan):
            item = plan[state.position]
            values = _guarded(trainer, item)
            state.position += 1
            state.step += 1
            for key, value in values.items():
                state.losses.setdefault(key, []).append(value)
            trainer.on_event({
                "event": "progress", "stage": "train", "epoch": epoch, "epochs": trainer.epochs,
                "step": state.step, "total": trainer.total_steps, "loss": values["loss"],
                "eta_s": (time.perf_counter() - started) / (state.step - first_step)
                * (trainer.total_steps - state.step),
            })  # fmt: skip
            stop = should_stop is not None and should_stop()
            if stop and state.position < len(plan):
                _stop(trainer, checkpoint, epoch)
        stop_early = _end_epoch(trainer, epoch, time.perf_counter() - epoch_started)
        if checkpoint is not None and (epoch % config.checkpoint_every == 0 or stop_early):
            checkpoint(trainer.training_state(), "periodic")
        if stop_early:
            result.stopped_early = True
            trainer.on_event(
                {"event": "log", "message": f"Early stopping after epoch {epoch} (best: {result.best_epoch})."}
            )
            break
        if stop and state.epoch <= trainer.epochs:  # asked during the epoch's last step
            _stop(trainer, checkpoint, epoch)
    return result


def _guarded(trainer: Trainer, item: list[list[int]]) -> dict[str, float]:
    """Run one planned step; a CUDA out-of-memory error becomes one that says what to change."""
    try:
        return trainer._run_step(item)
    except torch.cuda.OutOfMemoryError as error:
        raise OutOfMemoryError(
            f"The GPU ran out of memory at batch size {trainer.config.batch_size}. Use a smaller batch size, "
            "turn on gradient_checkpointing, or the 'CPU quick' preset."
        ) from error


def _end_epoch(trainer: Trainer, epoch: int, seconds: float) -> bool:
    """Record the epoch's metrics, keep the best model, move the state on; True when early stopping says stop."""
    state, result = trainer.state, trainer.state.result
    metrics: dict[str, float] = {"epoch": epoch, **{k: float(np.mean(v)) for k, v in state.losses.items()}}
    metrics.update({
        "lr" if g["name"] == "weights" else f"{g['name']}_lr": float(g["lr"]) for g in trainer._groups()
    })  # fmt: skip
    metrics.update(trainer._epoch_metrics())
    metrics["seconds"] = seconds
    result.history.append(metrics)
    trainer.on_event({"event": "metrics", **metrics})
    score = trainer._score(metrics)
    if score >= result.best_metric:  # a tie keeps the later, more trained epoch (a validation Dice stuck at 0 or 1)
        result.best_metric, result.best_epoch = score, epoch
        result.best_state = trainable_state(trainer.model)
        state.since_best = 0
    else:
        state.since_best += 1
    state.end_epoch()
    # min_steps is a floor: early stopping waits for it (a few pictures may score alike for many epochs)
    floor_reached = state.step >= int(trainer.config.min_steps)
    return bool(trainer.config.patience and state.since_best >= trainer.config.patience and floor_reached)


def _stop(trainer: Trainer, checkpoint: Checkpoint | None, epoch: int) -> None:
    if checkpoint is not None:
        checkpoint(trainer.training_state(), "cancelled")
    raise TrainingCancelledError(
        f"Training was cancelled in epoch {epoch} at step {trainer.state.step} of {trainer.total_steps}; "
        "resume it from its run folder."
    )


__all__ = ["Checkpoint", "run_epochs"]
