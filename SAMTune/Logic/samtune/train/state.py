"""What a training run has done so far, typed: the result, and the resumable state of the loop.

:class:`TrainingState` is the loop's position (epoch, step, the epoch's planned batches, the losses
so far, epochs since the best one) plus the :class:`TrainResult`; the trainer adds the tensors
(weights, optimiser, random-number states) when it writes a checkpoint. The checkpoint holds only
tensors, numbers, strings, lists and dicts, so it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

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


__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "TrainResult", "TrainingState", "trainable_state"]
