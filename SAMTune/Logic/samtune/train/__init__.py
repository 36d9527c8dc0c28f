"""Fine-tuning: configuration, data, losses, augmentation, the trainer and the end-to-end run."""

from samtune.train.augment import AugmentConfig, augment_batch
from samtune.train.bilevel import BiLevelTrainer, prompt_hypergradient, split_d1_d2
from samtune.train.cache import EmbeddingCache
from samtune.train.config import BiLevelConfig, Hypergradient, Optimiser, PromptMode, TrainConfig
from samtune.train.data import SliceSamples, TrainingCase, build_samples
from samtune.train.losses import LossKind, dice_ce_loss, soft_dice_loss, structure_loss
from samtune.train.presets import Preset, list_presets, load_preset, presets_dir
from samtune.train.run import FineTuneOutcome, fine_tune
from samtune.train.schedule import make_scheduler, warmup_poly_factor
from samtune.train.trainer import OutOfMemoryError, Trainer, TrainingCancelledError, TrainingDivergedError, TrainResult

__all__ = [
    "AugmentConfig",
    "BiLevelConfig",
    "BiLevelTrainer",
    "EmbeddingCache",
    "FineTuneOutcome",
    "Hypergradient",
    "LossKind",
    "Optimiser",
    "OutOfMemoryError",
    "Preset",
    "PromptMode",
    "SliceSamples",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingCancelledError",
    "TrainingCase",
    "TrainingDivergedError",
    "augment_batch",
    "build_samples",
    "dice_ce_loss",
    "fine_tune",
    "list_presets",
    "load_preset",
    "make_scheduler",
    "presets_dir",
    "prompt_hypergradient",
    "soft_dice_loss",
    "split_d1_d2",
    "structure_loss",
    "warmup_poly_factor",
]
