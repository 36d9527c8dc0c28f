"""Fine-tuning: configuration, data, losses, augmentation, the trainer and the end-to-end run."""

from typing import TYPE_CHECKING

from samtune._lazy import lazy_exports

if TYPE_CHECKING:
    from samtune.errors import OutOfMemoryError, TrainingCancelledError, TrainingDivergedError
    from samtune.train.augment import augment_batch
    from samtune.train.bilevel import BiLevelTrainer, prompt_hypergradient, split_d1_d2
    from samtune.train.cache import EmbeddingCache
    from samtune.train.config import (
        AugmentConfig,
        BiLevelConfig,
        EmbeddingCacheMode,
        Hypergradient,
        LossKind,
        MixedPrecision,
        Optimiser,
        PromptMode,
        TrainConfig,
    )
    from samtune.train.data import SliceSamples, TrainingCase, build_samples
    from samtune.train.fine_tuning import FineTuneOutcome, fine_tune
    from samtune.train.losses import dice_ce_loss, soft_dice_loss, structure_loss
    from samtune.train.presets import (
        Preset,
        changed_fields,
        list_presets,
        load_preset,
        presets_dir,
        resolve_train_config,
    )
    from samtune.train.schedule import make_scheduler, warmup_poly_factor
    from samtune.train.state import TrainingState, TrainResult
    from samtune.train.trainer import Trainer

__getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)
