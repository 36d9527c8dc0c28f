"""Fine-tune end to end: build the backbone, inject the method, split, train, save the model folder."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from samtune.data.labels import EmptySlicePolicy
from samtune.data.split import split_cases
from samtune.errors import ConfigurationError, DataError, TrainingCancelledError
from samtune.library.card import MODEL_WEIGHTS
from samtune.models.builders import build_model, build_tiny_model
from samtune.models.device import resolve_device
from samtune.models.sam_model import SamModel
from samtune.peft.apply import apply_finetuning
from samtune.predict.decode import BOX_DECODER_PASSES
from samtune.train.bilevel import BiLevelTrainer
from samtune.train.checkpoint_store import CheckpointStore
from samtune.train.config import Optimiser, TrainConfig
from samtune.train.data import SliceSamples, TrainingCase, build_samples
from samtune.train.distributed import DistributedContext, device_for
from samtune.train.loop import run_epochs
from samtune.train.presence import DEFAULT_PRESENCE_THRESHOLD, choose_presence_threshold, presence_figures
from samtune.train.state import TrainResult
from samtune.train.trainer import EventCallback, Trainer


@dataclass
class FineTuneOutcome:
    """What :func:`fine_tune` produced.

    Attributes:
        model: The fine-tuned model (best epoch), in eval mode.
        result: Metrics history and best epoch.
        summary: Training-data summary for the model card.
        folder: The saved model folder, if ``out_dir`` was given.
    """

    model: SamModel
    result: TrainResult
    summary: dict[str, Any]
    folder: Path | None = None


#: Said when box-prompted steps train on one case: measured on la_heart_dev (docs/fine-tuning.md, 3 seeds each).
ONE_CASE_PROMPT_MIX = (
    "prompt_mix {} gives box prompts in training, and this run trains on one case: in the la_heart study, 2 of 3 "
    "such runs (seeds) learned to mark nothing (held-out Dice 0.00; the third 0.54-0.56), where the same training "
    "without box prompts reached 0.41-0.56 with every seed. Set prompt_mix to 0 unless you train on several cases."
)


def _summary(train: SliceSamples, val: SliceSamples | None, cases: Sequence[TrainingCase]) -> dict[str, Any]:
    return {
        "cases": len(cases),
        "train_cases": sorted(set(train.case_ids)),
        "val_cases": sorted(set(val.case_ids)) if val is not None else [],
        "train_slices": len(train),
        "val_slices": len(val) if val is not None else 0,
        "spacing_mm": [list(c.image.spacing) for c in cases],
        "structures": sorted({c.structure for c in cases}),
    }


def _automatic_defaults(trainer: Trainer, model: SamModel) -> dict[str, Any]:
    """How the trained model predicts in automatic mode (the model card's ``automatic``): its presence
    threshold (chosen on the validation slices when there are any), its refinement passes, and
    whether they ask the pretrained decoder kept before fine-tuning (``refine_decoder``)."""
    config = trainer.config
    out: dict[str, Any] = {"presence_threshold": None, "refine": 1 if config.prompt_mix > 0 else 0}
    if model.box_decoder is not None:
        out["refine"], out["refine_decoder"] = BOX_DECODER_PASSES, "pretrained"
    if config.presence_weight <= 0:
        return out
    out["presence_threshold"], out["threshold_from"] = DEFAULT_PRESENCE_THRESHOLD, "default"
    if trainer.val_samples is not None and len(trainer.val_samples):

        def outputs_of(images: Any, embeddings: Any, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            with trainer._autocast():
                logits, score, _ = trainer._outputs(images, embeddings, masks)
            return logits, score

        figures = presence_figures(outputs_of, trainer.val_samples, trainer.val_cache, device=trainer.device,
                                   batch_size=config.batch_size)  # fmt: skip
        out["presence_threshold"], out["val_dice_at_threshold"] = choose_presence_threshold(**figures)
        out["threshold_from"] = "validation"
    return out


def _stop_while_caching(on_event: EventCallback | None, should_stop: Callable[[], bool]) -> EventCallback:
    """Pass events on, and stop after any embedding-cache slice when a stop was asked for.

    Computing the embeddings can take minutes on a CPU before the first training step; nothing is
    trained yet then, so the run stops without a checkpoint and a resume starts it afresh.
    """

    def events(event: dict[str, Any]) -> None:
        if on_event is not None:
            on_event(event)
        if event.get("event") == "progress" and event.get("stage") == "cache" and should_stop():
            raise TrainingCancelledError(
                f"Training was cancelled while computing image embeddings ({event.get('step')} of "
                f"{event.get('total')} slices), before this attempt's first step; to resume, run it again with "
                "--resume (it continues from the last checkpoint, or starts afresh when there is none)."
            )

    return events


def _warm_start(
    parent: str | Path, config: TrainConfig, device: torch.device, backbone_weights: str | Path | None
) -> tuple[SamModel, dict[str, Any]]:
    """The parent model (its method applied, its weights loaded) and the card's link to it.

    Raises:
        ConfigurationError: ``config`` names another backbone or method than the parent's.
        WeightsError: Not a model folder, or backbone weights that differ from the parent's.
    """
    from samtune.library.model_folder import load_trained_model
    from samtune.models.weights import sha256_file

    folder = Path(parent).expanduser().resolve()
    model, card = load_trained_model(folder, device=device, backbone_weights=backbone_weights)
    theirs = card["training"]
    mine = config.to_dict()
    for key, what in (("backbone", "backbone"), ("finetune", "fine-tuning method and its settings")):
        if theirs.get(key) != mine.get(key):
            raise ConfigurationError(
                f"Retraining continues the weights of '{folder.name}', so it keeps its {what}: the model has "
                f"{theirs.get(key)}, the new settings {mine.get(key)}. Leave {key} out of the settings, or train "
                "a new model instead."
            )
    previous: dict[str, Any] = card["parent"] if isinstance(card.get("parent"), dict) else {}
    lineage = {
        "name": card.get("name", folder.name),
        "path": str(folder),
        "weights_sha256": sha256_file(folder / MODEL_WEIGHTS),
        "created": card.get("created"),
        "generation": int(previous.get("generation", 0)) + 1,
    }
    return model, lineage


def _tiny_seed(model: SamModel, config: TrainConfig) -> int:
    """The seed that rebuilds a tiny model's random base (a warm start's is its parent's)."""
    return config.seed if model.tiny_seed is None else model.tiny_seed


def fine_tune(
    cases: Sequence[TrainingCase],
    config: TrainConfig,
    *,
    model: SamModel | None = None,
    out_dir: str | Path | None = None,
    on_event: EventCallback | None = None,
    backbone_weights: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    should_stop: Callable[[], bool] | None = None,
    tiny: bool = False,
    distributed: DistributedContext | None = None,
    shards: int | None = None,
    parent: str | Path | None = None,
) -> FineTuneOutcome:
    """Fine-tune ``config.backbone`` on ``cases`` and optionally save the model folder.

    Args:
        cases: Labelled training cases (one structure each; see :class:`TrainingCase`).
        config: Training configuration (usually from a preset).
        model: A ready model instead of building ``config.backbone`` (tests pass tiny ones).
        out_dir: Model folder to write (must not exist or be empty).
        on_event: Progress/metrics callback.
        backbone_weights: Explicit weights file for the backbone.
        checkpoint_dir: Folder for resumable checkpoints (every ``config.checkpoint_every`` epochs
            and on cancellation); ``None`` writes none.
        resume: Continue from the newest intact checkpoint in ``checkpoint_dir`` (a fresh run
            when there is none).
        should_stop: Polled after every step; True stops the run after a checkpoint
            (:class:`~samtune.train.TrainingCancelledError`).
        tiny: Build a tiny randomly initialised configuration of the backbone, seeded with
            ``config.seed`` (a dry run of the whole pipeline in seconds; the model is useless).
        distributed: This process's place in a ``torchrun`` run (see
            :mod:`samtune.train.distributed`); only rank 0 writes checkpoints, events and the model.
        shards: Plan batches as if split over this many processes (default: the world size); a
            single process given the world size of a distributed run makes the same steps.
        parent: A trained model folder to continue from (warm start): its backbone, method and
            trained weights are the first step's; ``config`` must name the same backbone and method.
            The new model's card links it (``parent``).

    Raises:
        DataError: No labelled slice; a validation split with fewer than two cases.
        ConfigurationError, WeightsError, DeviceError: From configuration, weights and device checks.
    """
    structures = {c.structure for c in cases}
    if len(structures) > 1:
        raise DataError(
            f"One training run learns one structure; got {sorted(structures)}. Train one model per structure."
        )
    device = resolve_device(device_for(distributed, config.device))
    main_process = distributed is None or distributed.is_main
    if not main_process:
        on_event = None
    lineage = None
    if parent is not None:
        model, lineage = _warm_start(parent, config, device, backbone_weights)
    if model is None and tiny:
        model = build_tiny_model(config.backbone, seed=config.seed, device=device)
    tiny = model is not None and model.tiny
    if model is None:
        model = build_model(config.backbone, weights=backbone_weights, device=device)
    else:
        model.to(device)
    if config.prompt_mix > 0:  # the model answers boxes itself: its own decoder refines
        model.box_decoder = None
    elif lineage is None and not tiny:  # before fine-tuning; a parent kept its own, and tiny random
        model.keep_box_decoder()  # configurations have no pretrained decoder that answers boxes
    if lineage is None:  # a parent's method is in place, with its trained weights
        with torch.random.fork_rng(devices=[]):  # adapter initialisation follows the run's seed
            torch.manual_seed(config.seed)
            apply_finetuning(model, config.finetune)
    if config.gradient_checkpointing:
        from samtune.train.gradient_checkpointing import enable_gradient_checkpointing

        enable_gradient_checkpointing(model)
    ids = [c.case_id for c in cases]
    if config.val_fraction > 0 and len(ids) >= 2:
        positives = [c.case_id for c in cases if (c.label.array == int(c.value)).any()]
        train_ids, val_ids = split_cases(ids, val_fraction=config.val_fraction, seed=config.seed, positives=positives)
    elif config.val_fraction > 0:
        raise DataError(
            f"A validation split needs at least two labelled cases, got {len(ids)}. Add a case or set "
            "val_fraction to 0 (no validation Dice is then reported)."
        )
    else:
        train_ids, val_ids = ids, []
    if config.prompt_mix > 0 and len(train_ids) == 1 and on_event is not None:
        on_event({"event": "log", "level": "warning", "message": ONE_CASE_PROMPT_MIX.format(config.prompt_mix)})

    def samples(selected: list[str], policy: EmptySlicePolicy) -> SliceSamples:
        chosen = [c for c in cases if c.case_id in selected]
        return build_samples(
            chosen,
            input_size=model.input_size,
            pixel_norm=model.pixel_norm,
            slices=config.slices,
            empty_policy=policy,
            keep_fraction=config.empty_keep_fraction,
            seed=config.seed,
        )

    train = samples(train_ids, config.empty_slices)
    # A presence decision is judged, and its threshold chosen, on every ground-truth slice, as prediction meets them.
    val_policy = EmptySlicePolicy.KEEP_ALL if config.presence_weight > 0 else config.empty_slices
    val = samples(val_ids, val_policy) if val_ids else None
    trainer_class = BiLevelTrainer if config.optimiser is Optimiser.BILEVEL else Trainer
    events = on_event
    if should_stop is not None and distributed is None:  # Ctrl-C / Cancel while the embeddings are computed
        events = _stop_while_caching(on_event, should_stop)
    trainer = trainer_class(model, config, train, val, on_event=events, distributed=distributed, shards=shards)
    store = CheckpointStore(checkpoint_dir) if checkpoint_dir is not None else None
    stop = should_stop
    if distributed is not None and should_stop is not None:
        stop = lambda: distributed.any(should_stop())  # noqa: E731 - every rank stops at the same step
    state = None
    if resume and store is not None:
        latest = store.load_latest()
        for message in store.skipped:
            (on_event or (lambda event: None))({"event": "log", "level": "warning", "message": message})
        if latest is not None:
            state, entry = latest
            (on_event or (lambda event: None))(
                {"event": "log", "message": f"Resuming from {entry['file']} (step {entry['step']})."}
            )

    def save_checkpoint(training_state: dict[str, Any], reason: str) -> None:
        assert store is not None
        path = store.save(training_state, step=int(training_state["step"]), reason=reason)
        if on_event is not None:
            on_event({"event": "checkpoint", "path": str(path), "epoch": int(training_state["epoch"]) - 1,
                      "step": int(training_state["step"]), "reason": reason})  # fmt: skip

    result = run_epochs(
        trainer, checkpoint=save_checkpoint if store is not None and main_process else None, resume=state,
        should_stop=stop,
    )  # fmt: skip
    trainer.load_best(result)
    model.eval()
    automatic = _automatic_defaults(trainer, model)
    model.presence_threshold, model.refine_passes = automatic["presence_threshold"], automatic["refine"]
    summary = _summary(train, val, cases)
    folder = None
    if out_dir is not None and main_process:
        from samtune.library.model_folder import save_trained_model

        best = result.history[result.best_epoch - 1] if result.best_epoch else {}
        folder = save_trained_model(
            out_dir,
            model,
            train_config=config.to_dict(),
            structure=next(iter(structures)),
            data_summary=summary,
            metrics={k: float(v) for k, v in best.items() if isinstance(v, (int, float, np.floating))},
            backbone_weights=backbone_weights,
            extra={
                "automatic": automatic,
                **({"tiny": True, "tiny_seed": _tiny_seed(model, config)} if tiny else {}),
                **({"parent": lineage} if lineage else {}),
            },  # fmt: skip
        )
    return FineTuneOutcome(model, result, summary, folder)
