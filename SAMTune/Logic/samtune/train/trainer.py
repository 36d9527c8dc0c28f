"""The training loop: AdamW, warm-up + poly decay, Dice/CE, validation Dice/NSD, early stopping.

Progress and metrics leave through one callback (``on_event(dict)``), so the CLI, the background
worker and tests observe the same run. Runs are reproducible for a seed on one device.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from samtune.errors import SAMTuneError
from samtune.metrics import dice, normalized_surface_dice
from samtune.models.sam_model import SamModel
from samtune.peft.conv_lora import balance_loss
from samtune.train.augment import augment_batch
from samtune.train.cache import EmbeddingCache
from samtune.train.config import TrainConfig
from samtune.train.data import SliceSamples
from samtune.train.losses import LossKind, dice_ce_loss, structure_loss
from samtune.train.prompts import simulate_prompts
from samtune.train.schedule import make_scheduler

logger = logging.getLogger(__name__)

#: ``on_event(event)`` receives dicts with a ``"type"`` key: progress, metrics, log.
EventCallback = Callable[[dict[str, Any]], None]


class TrainingDivergedError(SAMTuneError, RuntimeError):
    """The loss became NaN or infinite."""

    kind = "diverged"


class OutOfMemoryError(SAMTuneError, RuntimeError):
    """The device ran out of memory."""

    kind = "out_of_memory"


@dataclass
class TrainResult:
    """Outcome of :meth:`Trainer.fit`.

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


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the parameters that learn."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


class Trainer:
    """Fine-tune a prepared model (see :func:`samtune.peft.apply_finetuning`) on slice samples.

    Args:
        model: Model whose trainable parameters are set.
        config: Training configuration.
        train: Training samples.
        val: Validation samples (``None``: the best model is the one with the lowest training loss).
        on_event: Receives progress, metrics and log events.
    """

    def __init__(
        self,
        model: SamModel,
        config: TrainConfig,
        train: SliceSamples,
        val: SliceSamples | None = None,
        *,
        on_event: EventCallback | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self.train_samples = train
        self.val_samples = val
        self.on_event = on_event or (lambda event: None)
        self.device = model.device
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        if not self.parameters:
            raise SAMTuneError("No parameter is trainable: apply a fine-tuning method first.")
        self.steps_per_epoch = math.ceil(len(train) / config.batch_size)
        self.total_steps = self.steps_per_epoch * config.epochs
        self.optimizer = torch.optim.AdamW(self.parameters, lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = make_scheduler(
            self.optimizer,
            total_steps=self.total_steps,
            warmup_steps=config.warmup_steps,
            power=config.poly_power,
        )
        fp16 = config.mixed_precision == "fp16" and self.device.type == "cuda"
        #: Loss scaling for fp16 (bf16 and fp32 need none; disabled it passes values through).
        self.scaler = torch.amp.GradScaler("cuda", enabled=fp16)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)
        self.cache: EmbeddingCache | None = None
        self.val_cache: EmbeddingCache | None = None
        if config.uses_cache:
            self.cache = EmbeddingCache(model, train.images, progress=self._progress_cache)
            if val is not None:
                self.val_cache = EmbeddingCache(model, val.images, progress=self._progress_cache)

    def _progress_cache(self, done: int, total: int, message: str) -> None:
        self.on_event({"type": "progress", "stage": "cache", "step": done, "total": total, "message": message})

    def _autocast(self) -> Any:
        mode = self.config.mixed_precision
        if mode == "off" or (mode == "auto" and self.device.type != "cuda"):
            return torch.autocast(self.device.type, enabled=False)
        dtype = torch.float16 if mode == "fp16" else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype)

    def _logits(
        self, images: torch.Tensor | None, embeddings: torch.Tensor | None, masks: torch.Tensor
    ) -> torch.Tensor:
        if embeddings is None:
            assert images is not None
            embeddings = self.model.encode(images)
        boxes, points = simulate_prompts(masks, self.config.prompt_mode, self.rng)
        low_res, _ = self.model.decode(embeddings, boxes=boxes, points=points)
        return self.model.upscale_logits(low_res)

    def _loss(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        target = masks[:, None].float()
        if LossKind.parse(self.config.loss) is LossKind.STRUCTURE:
            return structure_loss(logits.float(), target)
        return dice_ce_loss(
            logits.float(), target, dice_weight=self.config.dice_weight, ce_weight=self.config.ce_weight
        )

    def train_step(self, indices: torch.Tensor) -> tuple[float, float]:
        """One optimiser step on samples ``indices``; returns ``(loss, balance loss)``."""
        self.model.train()
        masks = self.train_samples.masks.index_select(0, indices)
        embeddings = images = None
        if self.cache is not None:
            embeddings = self.cache.get(indices, self.device)
        else:
            images = self.train_samples.images.index_select(0, indices)
            images, masks = augment_batch(images, masks, self.config.augment, self.generator)
            images = images.to(self.device)
        masks = masks.to(self.device)
        with self._autocast():
            logits = self._logits(images, embeddings, masks)
            loss = self._loss(logits, masks)
            balance = balance_loss(self.model).to(loss.device)
            total = loss + balance
        if not torch.isfinite(total):
            raise TrainingDivergedError(
                f"The loss became {float(total.detach())} at step {self.scheduler.last_epoch + 1}. "
                "Lower the learning rate "
                f"(now {self.config.lr}) or switch mixed precision off; the last good checkpoint is kept."
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return float(loss.detach()), float(balance.detach())

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Foreground Dice and NSD per validation case (mean over cases), on the original slice grids."""
        samples = self.val_samples
        if samples is None or len(samples) == 0:
            return {}
        self.model.eval()
        predictions: list[np.ndarray] = []
        for start in range(0, len(samples), self.config.batch_size):
            index = torch.arange(start, min(start + self.config.batch_size, len(samples)))
            masks = samples.masks.index_select(0, index).to(self.device)
            if self.val_cache is not None:
                embeddings = self.val_cache.get(index, self.device)
                images = None
            else:
                embeddings, images = None, samples.images.index_select(0, index).to(self.device)
            with self._autocast():
                logits = self._logits(images, embeddings, masks)
            for row, i in enumerate(index.tolist()):
                grid = samples.grids[samples.case_ids[i]]
                predictions.append(grid.logits_to_masks(logits[row : row + 1].float())[0])  # type: ignore[attr-defined]
        by_case: dict[str, list[int]] = {}
        for i, case in enumerate(samples.case_ids):
            by_case.setdefault(case, []).append(i)
        dices, nsds = [], []
        for rows in by_case.values():
            prediction = np.stack([predictions[i] for i in rows])
            reference = np.stack([samples.slice_masks[i] for i in rows])
            dices.append(dice(prediction, reference))
            row_mm, col_mm = samples.spacing[rows[0]]
            nsds.append(
                float(np.mean([
                    normalized_surface_dice(p, r, spacing=(row_mm, col_mm), tolerance_mm=self.config.nsd_tolerance_mm)
                    for p, r in zip(prediction, reference)
                ]))
            )  # fmt: skip
        return {"val_dice": float(np.mean(dices)), "val_nsd": float(np.mean(nsds))}

    def fit(self, *, checkpoint: Callable[[int, TrainResult], None] | None = None) -> TrainResult:
        """Train for ``config.epochs`` (or until early stopping) and return the best model's state.

        Args:
            checkpoint: Called as ``checkpoint(epoch, result_so_far)`` every ``checkpoint_every`` epochs.

        Raises:
            TrainingDivergedError: NaN or infinite loss.
            OutOfMemoryError: The GPU ran out of memory (with what to change).
        """
        config = self.config
        result = TrainResult(best_metric=-math.inf, best_epoch=0, best_state=trainable_state(self.model))
        since_best = 0
        started = time.perf_counter()
        step = 0
        for epoch in range(1, config.epochs + 1):
            epoch_started = time.perf_counter()
            order = torch.randperm(len(self.train_samples), generator=self.generator)
            losses, balances = [], []
            for batch in order.split(config.batch_size):
                try:
                    loss, balance = self.train_step(batch)
                except torch.cuda.OutOfMemoryError as error:
                    raise OutOfMemoryError(
                        f"The GPU ran out of memory at batch size {config.batch_size}. Use a smaller batch size, "
                        "turn on gradient_checkpointing, or the 'CPU quick' preset."
                    ) from error
                losses.append(loss)
                balances.append(balance)
                step += 1
                elapsed = time.perf_counter() - started
                self.on_event({
                    "type": "progress", "stage": "train", "epoch": epoch, "epochs": config.epochs,
                    "step": step, "total": self.total_steps, "loss": loss,
                    "eta_s": elapsed / step * (self.total_steps - step),
                })  # fmt: skip
            metrics = {
                "epoch": epoch,
                "loss": float(np.mean(losses)),
                "balance_loss": float(np.mean(balances)),
                "lr": float(self.optimizer.param_groups[0]["lr"]),
                **self.validate(),
                "seconds": time.perf_counter() - epoch_started,
            }
            result.history.append(metrics)
            self.on_event({"type": "metrics", **metrics})
            score = metrics.get("val_dice", -metrics["loss"])
            if score > result.best_metric:
                result.best_metric, result.best_epoch = score, epoch
                result.best_state = trainable_state(self.model)
                since_best = 0
            else:
                since_best += 1
            if checkpoint is not None and epoch % config.checkpoint_every == 0:
                checkpoint(epoch, result)
            if config.patience and since_best >= config.patience:
                result.stopped_early = True
                self.on_event(
                    {
                        "type": "log",
                        "message": f"Early stopping after epoch {epoch} (best: {result.best_epoch}).",
                    }
                )
                break
        return result

    def load_best(self, result: TrainResult) -> None:
        """Put the best model's trainable parameters back into the model."""
        parameters = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in result.best_state.items():
                parameters[name].copy_(value)


__all__ = ["OutOfMemoryError", "TrainResult", "Trainer", "TrainingDivergedError"]
