"""The training loop: AdamW, warm-up + poly decay, Dice/CE, validation Dice/NSD, early stopping.

Progress and metrics leave through one callback (``on_event(dict)``), so the CLI, the background
worker and tests observe the same run. Runs are reproducible for a seed on one device.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from samtune.errors import SAMTuneError, TrainingDivergedError
from samtune.models.sam_model import SamModel
from samtune.peft.config import Method
from samtune.peft.conv_lora.inject import balance_loss
from samtune.peft.learned_prompt import prompt_parameters
from samtune.predict.decode import gate_logits
from samtune.train.augment import augment_batch
from samtune.train.cache import EmbeddingCache
from samtune.train.config import LossKind, MixedPrecision, PromptMode, TrainConfig
from samtune.train.data import SliceSamples, with_views
from samtune.train.distributed import DistributedContext, check_batch
from samtune.train.evaluation import evaluate_samples
from samtune.train.losses import dice_ce_loss, presence_loss, structure_loss
from samtune.train.presence import DEFAULT_PRESENCE_THRESHOLD
from samtune.train.schedule import make_scheduler
from samtune.train.simulated_prompts import SimulatedPrompts, simulate_prompts
from samtune.train.state import TrainingState, TrainResult, checkpoint_of, restore_checkpoint

logger = logging.getLogger(__name__)

#: ``on_event(event)`` receives event dicts (``{"event": TYPE, ...}``, as on the wire): progress, metrics, log.
EventCallback = Callable[[dict[str, Any]], None]


class _Segmenter(torch.nn.Module):
    """``(images or embeddings, prompts) -> (logits, score)``: the forward pass DistributedDataParallel wraps.

    ``score`` is the IoU head's first output, the presence logit of models trained with ``presence_weight``.
    """

    def __init__(self, model: SamModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        images: torch.Tensor | None,
        embeddings: torch.Tensor | None,
        prompts: SimulatedPrompts,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if embeddings is None:
            assert images is not None
            embeddings = self.model.encode(images)
        mask_prompt = None if prompts.masks is None else self.model.mask_input(prompts.masks)
        low_res, score = self.model.decode(
            embeddings, boxes=prompts.boxes, points=prompts.points, mask_prompt=mask_prompt
        )
        return self.model.upscale_logits(low_res), score[:, 0]


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
        distributed: DistributedContext | None = None,
        shards: int | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self.distributed = distributed
        #: Batches are planned as if split over this many processes (the world size by default).
        self.shards = int(shards or (distributed.world_size if distributed else 1))
        self.local_batch = check_batch(config.batch_size, self.shards)
        self.generator = torch.Generator().manual_seed(config.seed)
        if config.uses_cache and config.cached_views:  # augmented views, encoded once with the originals
            train = with_views(train, config.cached_views, config.augment, self.generator)
        self.shard_rows = [list(range(s, len(train), self.shards)) for s in range(self.shards)]
        self.train_samples = train
        self.val_samples = val
        self.on_event = on_event or (lambda event: None)
        self.device = model.device
        self.rng = np.random.default_rng(config.seed)
        self._state: TrainingState | None = None  # set when the fit loop starts or resumes
        self._setup()
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        if not self.parameters:
            raise SAMTuneError("No parameter is trainable: apply a fine-tuning method first.")
        self.prompt_parameters = prompt_parameters(model)
        prompt_ids = {id(p) for p in self.prompt_parameters}
        self.weight_parameters = [p for p in self.parameters if id(p) not in prompt_ids]
        self.steps_per_epoch = self._steps_per_epoch()
        #: Epochs to run: ``config.epochs``, more when that would make fewer than ``config.min_steps`` steps.
        self.epochs = max(int(config.epochs), math.ceil(config.min_steps / max(1, self.steps_per_epoch)))
        self.total_steps = self.steps_per_epoch * self.epochs
        self._build_optimisers()
        fp16 = config.mixed_precision is MixedPrecision.FP16 and self.device.type == "cuda"
        #: Loss scaling for fp16 (bf16 and fp32 need none; disabled it passes values through).
        self.scaler = torch.amp.GradScaler("cuda", enabled=fp16)
        self.cache: EmbeddingCache | None = None
        self.val_cache: EmbeddingCache | None = None
        self.segmenter: torch.nn.Module = _Segmenter(model)
        if distributed is not None:
            from torch.nn.parallel import DistributedDataParallel

            self.segmenter = DistributedDataParallel(
                self.segmenter,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                # Conv-LoRA's unselected experts; the presence head on prompted steps.
                find_unused_parameters=config.finetune.method is Method.CONV_LORA
                or (config.presence_weight > 0 and config.prompt_mix > 0),
            )
        if config.uses_cache:
            own = self.shard_rows[distributed.rank] if distributed is not None else None
            self.cache = EmbeddingCache(model, train.images, progress=self._progress_cache, rows=own, store=True)
            if val is not None:
                self.val_cache = EmbeddingCache(model, val.images, progress=self._progress_cache, store=True)
            caches = [c for c in (self.cache, self.val_cache) if c is not None]
            reused = sum(len(c) - c.encoded for c in caches)
            if reused:
                message = f"{reused} of {sum(len(c) for c in caches)} slice embeddings came from the embedding store."
                self.on_event({"event": "log", "message": message})

    @property
    def state(self) -> TrainingState:
        """Where the fit loop stands (:class:`~samtune.train.state.TrainingState`)."""
        if self._state is None:
            raise RuntimeError("The fit loop has not started: call fit() first.")
        return self._state

    @state.setter
    def state(self, value: TrainingState) -> None:
        self._state = value

    def _setup(self) -> None:
        """Hook for subclasses, run before the optimisers are built (samples and seeds are set)."""

    def _steps_per_epoch(self) -> int:
        if self.shards > 1:
            return math.ceil(max(len(rows) for rows in self.shard_rows) / self.local_batch)
        return math.ceil(len(self.train_samples) / self.config.batch_size)

    def _weight_group(self) -> dict[str, Any]:
        config = self.config
        return {
            "name": "weights",
            "params": self.weight_parameters,
            "lr": config.lr,
            "weight_decay": config.weight_decay,
        }

    def _prompt_group(self) -> dict[str, Any]:
        bilevel = self.config.bilevel
        return {
            "name": "prompt",
            "params": self.prompt_parameters,
            "lr": bilevel.prompt_lr,
            "weight_decay": bilevel.prompt_weight_decay,
        }

    def _build_optimisers(self) -> None:
        """One AdamW: the weights at ``lr`` and, with a learned prompt, the prompt at ``prompt_lr``."""
        config = self.config
        groups: list[dict[str, Any]] = []
        warmups, powers = [], []
        if self.weight_parameters:
            groups.append(self._weight_group())
            warmups.append(config.warmup_steps)
            powers.append(config.poly_power)
        if self.prompt_parameters:
            groups.append(self._prompt_group())
            warmups.append(config.bilevel.prompt_warmup_steps)
            powers.append(config.bilevel.prompt_poly_power)
        self.optimizer = torch.optim.AdamW(groups)
        self.scheduler = make_scheduler(
            self.optimizer, total_steps=self.total_steps, warmup_steps=warmups, power=powers
        )

    def _progress_cache(self, done: int, total: int, message: str) -> None:
        self.on_event({"event": "progress", "stage": "cache", "step": done, "total": total, "message": message})

    def _autocast(self) -> Any:
        mode = self.config.mixed_precision
        if mode is MixedPrecision.OFF or (mode is MixedPrecision.AUTO and self.device.type != "cuda"):
            return torch.autocast(self.device.type, enabled=False)
        dtype = torch.float16 if mode is MixedPrecision.FP16 else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype)

    def _outputs(
        self,
        images: torch.Tensor | None,
        embeddings: torch.Tensor | None,
        masks: torch.Tensor,
        *,
        training: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """``(logits, presence logit, automatic)``: a training step given a box (``prompt_mix``) is not automatic."""
        mode = self.config.prompt_mode
        if training and self.config.prompt_mix > 0 and self.rng.random() < self.config.prompt_mix:
            mode = PromptMode.BOX
        forward = self.segmenter if training else self.segmenter_module
        logits, score = forward(images, embeddings, simulate_prompts(masks, mode, self.rng))
        return logits, score, mode is PromptMode.AUTOMATIC

    @property
    def segmenter_module(self) -> torch.nn.Module:
        """The forward module without the DDP wrapper (evaluation needs no gradient sync)."""
        return getattr(self.segmenter, "module", self.segmenter)

    def _loss(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        target = masks[:, None].float()
        if self.config.loss is LossKind.STRUCTURE:
            return structure_loss(logits.float(), target)
        return dice_ce_loss(
            logits.float(), target, dice_weight=self.config.dice_weight, ce_weight=self.config.ce_weight
        )

    def _objective(
        self,
        images: torch.Tensor | None,
        embeddings: torch.Tensor | None,
        masks: torch.Tensor,
        *,
        training: bool = False,
    ) -> torch.Tensor:
        """The batch's loss: segmentation, plus ``presence_weight`` x presence on automatic steps."""
        logits, score, automatic = self._outputs(images, embeddings, masks, training=training)
        loss = self._loss(logits, masks)
        if automatic and self.config.presence_weight > 0:
            loss = loss + self.config.presence_weight * presence_loss(score, masks)
        return loss

    def _batch(
        self, indices: torch.Tensor, *, augment: bool = True
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
        """``(images, embeddings, masks)`` of training samples ``indices`` on the device.

        Cached runs get embeddings (no augmentation, see :mod:`samtune.train.cache`); the others get
        images, augmented together with their masks.
        """
        masks = self.train_samples.masks.index_select(0, indices)
        if self.cache is not None:
            return None, self.cache.get(indices, self.device), masks.to(self.device)
        images = self.train_samples.images.index_select(0, indices)
        if augment:
            images, masks = augment_batch(images, masks, self.config.augment, self.generator)
        return images.to(self.device), None, masks.to(self.device)

    def _check_finite(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            raise TrainingDivergedError(
                f"The loss became {float(loss.detach())} at step {self.scheduler.last_epoch + 1}. "
                "Lower the learning rate "
                f"(now {self.config.lr}) or switch mixed precision off; the last good checkpoint is kept."
            )

    def train_step(self, indices: torch.Tensor) -> tuple[float, float]:
        """One optimiser step on samples ``indices``; returns ``(loss, balance loss)``."""
        self.model.train()
        images, embeddings, masks = self._batch(indices)
        with self._autocast():
            loss = self._objective(images, embeddings, masks, training=True)
            balance = balance_loss(self.model).to(loss.device)
            total = loss + balance
        self._check_finite(total)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return float(loss.detach()), float(balance.detach())

    def evaluate(
        self, samples: SliceSamples, cache: EmbeddingCache | None, indices: list[int] | None = None
    ) -> tuple[float, float]:
        """Foreground Dice and NSD of ``samples`` (or rows ``indices``), per case on the original grids, then
        the mean over cases (:func:`~samtune.train.evaluation.evaluate_samples`); presence gate at 0.5."""
        self.model.eval()

        def logits_of(
            images: torch.Tensor | None, embeddings: torch.Tensor | None, masks: torch.Tensor
        ) -> torch.Tensor:
            with self._autocast():
                logits, score, _ = self._outputs(images, embeddings, masks)
            return gate_logits(logits, score, DEFAULT_PRESENCE_THRESHOLD) if self.config.presence_weight else logits

        return evaluate_samples(logits_of, samples, cache, device=self.device, batch_size=self.config.batch_size,
                                nsd_tolerance_mm=self.config.nsd_tolerance_mm, indices=indices)  # fmt: skip

    def validate(self) -> dict[str, float]:
        """Foreground Dice and NSD per validation case (mean over cases), on the original slice grids."""
        if self.val_samples is None or len(self.val_samples) == 0:
            return {}
        val_dice, val_nsd = self.evaluate(self.val_samples, self.val_cache)
        return {"val_dice": val_dice, "val_nsd": val_nsd}

    def _epoch_plan(self, epoch: int) -> list[list[list[int]]]:
        """The batches of one epoch, drawn from the seeded generator: per step, lists of sample rows."""
        if self.shards == 1:
            order = torch.randperm(len(self.train_samples), generator=self.generator)
            return [[batch.tolist()] for batch in order.split(self.config.batch_size)]
        # One part per shard: each process draws its part of every global batch from its own rows
        # (a shorter shard wraps around, so every process has a full part at every step).
        orders = [
            [rows[int(i)] for i in torch.randperm(len(rows), generator=self.generator)] for rows in self.shard_rows
        ]
        local = self.local_batch
        return [
            [[order[(step * local + j) % len(order)] for j in range(local)] for order in orders]
            for step in range(self.steps_per_epoch)
        ]

    def _rows(self, item: list[list[int]]) -> list[int]:
        """This process's rows of a planned step: its part with several processes, all parts with one."""
        if self.distributed is not None:
            return item[self.distributed.rank]
        return [row for part in item for row in part]

    def _run_step(self, item: list[list[int]]) -> dict[str, float]:
        """Run one planned step; returns its losses (``loss`` at least)."""
        loss, balance = self.train_step(torch.tensor(self._rows(item), dtype=torch.long))
        if self.distributed is not None:  # report the global batch's loss, as one process would
            values = torch.tensor([loss, balance], dtype=torch.float64)
            torch.distributed.all_reduce(values)
            loss, balance = (float(v) / self.distributed.world_size for v in values)
        return {"loss": loss, "balance_loss": balance}

    def _epoch_metrics(self) -> dict[str, float]:
        """Metrics computed after each epoch (validation)."""
        return self.validate()

    def _score(self, metrics: dict[str, float]) -> float:
        """What the best checkpoint maximises: validation Dice, or minus the training loss without one."""
        return metrics.get("val_dice", -metrics["loss"])

    # --- resumable state ----------------------------------------------------------------------

    def _optimiser_state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def _load_optimiser_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def training_state(self) -> dict[str, Any]:
        """Everything needed to continue this run exactly (:func:`~samtune.train.state.checkpoint_of`)."""
        return checkpoint_of(self)

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`training_state` into this trainer (built with the same configuration and data)."""
        restore_checkpoint(self, state)

    def fit(
        self,
        *,
        checkpoint: Callable[[dict[str, Any], str], None] | None = None,
        resume: dict[str, Any] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> TrainResult:
        """Train and return the best model's state (:func:`samtune.train.loop.run_epochs`)."""
        from samtune.train.loop import run_epochs

        return run_epochs(self, checkpoint=checkpoint, resume=resume, should_stop=should_stop)

    def _groups(self) -> list[dict[str, Any]]:
        return list(self.optimizer.param_groups)

    def load_best(self, result: TrainResult) -> None:
        """Put the best model's trainable parameters back into the model."""
        parameters = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in result.best_state.items():
                parameters[name].copy_(value)


__all__ = ["EventCallback", "Trainer"]
