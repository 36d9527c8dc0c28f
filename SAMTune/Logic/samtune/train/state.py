"""What a training run has done so far, typed: the result, and the resumable state of the loop.

:class:`TrainingState` is the loop's position (epoch, step, the epoch's planned batches, the losses
so far, epochs since the best one) plus the :class:`TrainResult`; the trainer adds the tensors
(weights, optimiser, random-number states) when it writes a checkpoint. The checkpoint holds only
tensors, numbers, strings, lists and dicts, so it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from samtune.errors import SAMTuneError

if TYPE_CHECKING:
    from samtune.train.trainer import Trainer

#: ``format`` and ``version`` of a training checkpoint.
CHECKPOINT_FORMAT = "samtune-training-state"
CHECKPOINT_VERSION = 1


@dataclass
class TrainResult:
    """Outcome of :meth:`samtune.train.trainer.Trainer.fit`.

    Attributes:
        best_metric: Best validation foreground Dice (or ``-train loss`` without validation).
        best_epoch: Epoch (1-based) of the best model.
        history: One dict per epoch: loss, balance loss, val Dice/NSD, lr, seconds.
        stopped_early: Early stopping ended the run.
        best_state: Trainable parameters of the best model.
    """

    best_metric: float
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"best_metric": self.best_metric, "best_epoch": self.best_epoch, "history": self.history,
                "best_state": self.best_state}  # fmt: skip

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> TrainResult:
        return cls(best_metric=float(saved["best_metric"]), best_epoch=int(saved["best_epoch"]),
                   history=list(saved["history"]), best_state=dict(saved["best_state"]))  # fmt: skip


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the parameters that learn."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@dataclass
class TrainingState:
    """Where the training loop stands.

    Attributes:
        result: Best epoch and metrics so far.
        epoch: The epoch in progress (1-based).
        position: Steps of this epoch already run.
        plan: This epoch's batches (per step, per shard, sample rows); ``None`` before it is drawn.
        losses: This epoch's losses so far, per name.
        step: Steps run in the whole run.
        since_best: Epochs since the best one (early stopping).
    """

    result: TrainResult
    epoch: int = 1
    position: int = 0
    plan: list[list[list[int]]] | None = None
    losses: dict[str, list[float]] = field(default_factory=dict)
    step: int = 0
    since_best: int = 0

    @classmethod
    def start(cls, model: torch.nn.Module) -> TrainingState:
        """The state of a run before its first step."""
        return cls(result=TrainResult(best_metric=-math.inf, best_epoch=0, best_state=trainable_state(model)))

    def begin_epoch(self, plan: list[list[list[int]]]) -> None:
        self.plan, self.position, self.losses = plan, 0, {}

    def end_epoch(self) -> None:
        self.epoch, self.plan, self.position, self.losses = self.epoch + 1, None, 0, {}

    def to_checkpoint(self) -> dict[str, Any]:
        """The loop's part of a checkpoint (keys as written since version 1)."""
        return {"epoch": self.epoch, "position": self.position, "plan": self.plan, "epoch_losses": self.losses,
                "step": self.step, "since_best": self.since_best, "result": self.result.to_dict()}  # fmt: skip

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any]) -> TrainingState:
        return cls(
            result=TrainResult.from_dict(state["result"]),
            epoch=int(state["epoch"]),
            position=int(state["position"]),
            plan=state["plan"],
            losses={k: list(v) for k, v in state["epoch_losses"].items()},
            step=int(state["step"]),
            since_best=int(state["since_best"]),
        )


def checkpoint_of(trainer: Trainer) -> dict[str, Any]:
    """Everything needed to continue ``trainer``'s run exactly: trainable weights, optimiser and
    schedule states, random-number states, and the loop's :class:`TrainingState`.

    Only tensors, numbers, strings, lists and dicts: loadable with ``torch.load(weights_only=True)``.
    """
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "trainable": trainable_state(trainer.model),
        "optimiser": trainer._optimiser_state(),
        "generator": trainer.generator.get_state(),
        "numpy_rng": json.dumps(trainer.rng.bit_generator.state),
        "torch_rng": torch.get_rng_state(),
        **trainer.state.to_checkpoint(),
    }


def restore_checkpoint(trainer: Trainer, state: dict[str, Any]) -> None:
    """Restore :func:`checkpoint_of` into ``trainer`` (built with the same configuration and data)."""
    if state.get("format") != CHECKPOINT_FORMAT:
        raise SAMTuneError("Not a SAMTune training checkpoint.")
    parameters = dict(trainer.model.named_parameters())
    missing = [n for n in state["trainable"] if n not in parameters]
    if missing or set(state["trainable"]) != {n for n, p in parameters.items() if p.requires_grad}:
        raise SAMTuneError(
            "The checkpoint does not belong to this configuration (its trainable parameters differ). "
            "Resume with the run's own configuration."
        )
    with torch.no_grad():
        for name, value in state["trainable"].items():
            parameters[name].copy_(value)
    trainer._load_optimiser_state(state["optimiser"])
    trainer.generator.set_state(state["generator"])
    trainer.rng.bit_generator.state = json.loads(state["numpy_rng"])
    torch.set_rng_state(state["torch_rng"])
    trainer.state = TrainingState.from_checkpoint(state)


__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "TrainResult",
    "TrainingState",
    "checkpoint_of",
    "restore_checkpoint",
    "trainable_state",
]
