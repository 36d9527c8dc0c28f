"""The training configuration: one dataclass tree, validated, JSON round-trippable."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from samtune.config_io import config_from_dict, config_to_dict
from samtune.data.intensity import IntensityConfig
from samtune.data.labels import EmptySlicePolicy
from samtune.data.slicing import SliceConfig
from samtune.enums import StrEnum
from samtune.errors import ConfigurationError
from samtune.models.registry import get_backbone
from samtune.peft.config import FineTuneConfig, Method, Scope


@dataclass
class AugmentConfig:
    """Augmentation probabilities and ranges (finetune-SAM's set, milder defaults for small data).

    Attributes:
        enabled: Master switch.
        flip: Probability of a horizontal flip, and separately of a vertical flip.
        rotate_degrees: Maximum absolute rotation.
        rotate_p: Probability of a rotation.
        zoom: ``(min, max)`` scale of the random resized crop (1 = none).
        zoom_p: Probability of a zoom.
        intensity: Maximum relative brightness/contrast change.
        intensity_p: Probability of an intensity jitter.
        equalize_p: Probability of histogram equalisation.
    """

    enabled: bool = True
    flip: float = 0.5
    rotate_degrees: float = 15.0
    rotate_p: float = 0.5
    zoom: tuple[float, float] = (0.8, 1.2)
    zoom_p: float = 0.5
    intensity: float = 0.1
    intensity_p: float = 0.5
    equalize_p: float = 0.1

    def __post_init__(self) -> None:
        self.zoom = (float(self.zoom[0]), float(self.zoom[1]))
        for name in ("flip", "rotate_p", "zoom_p", "intensity_p", "equalize_p"):
            value = float(getattr(self, name))
            if not 0.0 <= value <= 1.0:
                raise ConfigurationError(f"augment.{name} is a probability in [0, 1], got {value}.")
        if not 0 < self.zoom[0] <= self.zoom[1]:
            raise ConfigurationError(f"augment.zoom must be (min, max) with 0 < min <= max, got {self.zoom}.")


#: The module that gives the per-slice presence decision: SAM's IoU (mask quality) head, retrained.
PRESENCE_HEAD = "mask_decoder.iou_prediction_head"


class LossKind(StrEnum):
    """Which training loss."""

    DICE_CE = "dice_ce"  # weighted soft Dice + BCE (finetune-SAM 1:1, BLO-SAM 0.8:0.2)
    STRUCTURE = "structure"  # boundary-weighted BCE + weighted IoU (Conv-LoRA's reference loss)


class PromptMode(StrEnum):
    """What the model is trained to answer to."""

    AUTOMATIC = "automatic"  # no prompt (prompt-free segmentation)
    BOX = "box"  # simulated boxes
    POINT = "point"  # simulated positive points
    SCRIBBLE = "scribble"  # points along simulated strokes, inside (and sometimes outside) the object
    LASSO = "lasso"  # a loose outline: its box and its interior as the mask input
    MASK = "mask"  # a rough segment as the mask input, with a click in its largest error
    MIXED = "mixed"  # one of box, point, scribble, lasso, mask per batch


class Optimiser(StrEnum):
    """Plain single-level training, BLO-SAM's bi-level optimisation, or its joint ablation."""

    PLAIN = "plain"
    BILEVEL = "bilevel"  # BLO-SAM: weights on D1, learned prompt on D2 through the updated weights
    JOINT = "joint"  # ablation: prompt and weights in one optimiser on D1 and D2 together


class EmbeddingCacheMode(StrEnum):
    """Whether training computes image embeddings once and reuses them every epoch."""

    AUTO = "auto"  # when the encoder is frozen
    ON = "on"
    OFF = "off"


class MixedPrecision(StrEnum):
    """Arithmetic of the forward pass."""

    AUTO = "auto"  # bf16 on CUDA, off elsewhere
    BF16 = "bf16"
    FP16 = "fp16"  # with loss scaling
    OFF = "off"


class Hypergradient(StrEnum):
    """How BLO-SAM's upper level differentiates through the lower step."""

    FIRST = "first"  # gradient at the updated weights (the unrolled step's dependence ignored)
    SECOND = "second"  # + finite-difference Hessian-vector product (DARTS)


@dataclass
class BiLevelConfig:
    """BLO-SAM's upper level (the learned prompt) and how the training set is halved.

    The lower level (decoder weights) uses the run's ``lr``, ``weight_decay``, ``warmup_steps`` and
    ``poly_power``; the upper level has its own.

    Attributes:
        prompt_lr: Peak learning rate of the prompt (AdamW); also used by ``joint``.
        prompt_weight_decay: Weight decay of the prompt.
        prompt_warmup_steps: Warm-up steps of the prompt's schedule.
        prompt_poly_power: Poly-decay exponent of the prompt's schedule.
        hypergradient: ``first`` (default) or ``second``.
        xi: Step size of the virtual lower step in the second-order term; ``null`` = the lower
            level's current learning rate (the DARTS convention).
        fd_epsilon: Finite-difference radius, divided by the norm of the upper gradient (DARTS: 0.01).
        d2_fraction: Share of the training cases (or slices, with one case) that form D2.
    """

    prompt_lr: float = 5e-3
    prompt_weight_decay: float = 0.0
    prompt_warmup_steps: int = 0
    prompt_poly_power: float = 0.9
    hypergradient: Hypergradient = Hypergradient.FIRST
    xi: float | None = None
    fd_epsilon: float = 0.01
    d2_fraction: float = 0.5

    def __post_init__(self) -> None:
        self.hypergradient = Hypergradient.parse(self.hypergradient, what="hypergradient")
        if float(self.prompt_lr) <= 0:
            raise ConfigurationError(f"bilevel.prompt_lr must be positive, got {self.prompt_lr}.")
        if float(self.fd_epsilon) <= 0:
            raise ConfigurationError(f"bilevel.fd_epsilon must be positive, got {self.fd_epsilon}.")
        if self.xi is not None and float(self.xi) < 0:
            raise ConfigurationError(f"bilevel.xi must be >= 0 or null, got {self.xi}.")
        if not 0.0 < float(self.d2_fraction) < 1.0:
            raise ConfigurationError(f"bilevel.d2_fraction must be in (0, 1), got {self.d2_fraction}.")


@dataclass
class TrainConfig:
    """Everything that defines a training run (a preset fills it; every field can be overridden).

    Attributes:
        backbone: Backbone name (see ``samtune models``).
        finetune: Method (vanilla/lora/adapter/conv_lora), scope and the method's settings.
        optimiser: ``plain``, ``bilevel`` (BLO-SAM) or ``joint`` (BLO-SAM's ablation).
        bilevel: The prompt's optimiser and the D1/D2 split (``bilevel`` and ``joint``).
        prompt_mode: ``automatic``, or the simulated prompts: ``box``, ``point``, ``scribble``, ``lasso``,
            ``mask`` or ``mixed`` (one of them per batch; see :mod:`samtune.train.simulated_prompts`).
        epochs: Passes over the training slices.
        min_steps: At least this many optimiser steps: a few labelled slices make short epochs, so
            they get more of them (0 = exactly ``epochs``); early stopping waits for them.
        batch_size: Slices per step.
        lr: Peak learning rate (AdamW).
        weight_decay: AdamW weight decay.
        warmup_steps: Linear warm-up steps before polynomial decay.
        poly_power: Exponent of the polynomial decay.
        loss: ``dice_ce`` or ``structure``.
        dice_weight: Weight of the Dice term (``dice_ce``).
        ce_weight: Weight of the cross-entropy term (``dice_ce``).
        val_fraction: Fraction of cases held out for validation (case level).
        patience: Early stopping after this many validations without improvement (0 = never).
        seed: Seed of every random choice; equal seeds give equal runs on the same device.
        empty_slices: What to do with ground-truth slices without the structure (a fully labelled
            case's; slices a user marked empty, e.g. corrections, are always kept unless ``drop``).
        empty_keep_fraction: Fraction of those kept with ``keep_fraction``.
        presence_weight: Weight of the presence loss (automatic mode): SAM's IoU head learns, per
            slice, whether the structure is there (binary cross-entropy against "the target has
            foreground"), so prediction can drop the masks of slices without it. The head is then
            trained in full (it joins ``finetune.train_modules``). 0 = off.
        prompt_mix: Automatic mode: share of training steps given a jittered box around the target
            instead of no prompt, so the model also answers boxes; prediction then refines each
            automatic mask with the box around it (self-prompting). 0 = no prompted steps.
        cached_views: Augmented views (``augment``) of every training slice added to the embedding
            cache: encoded once, reused every epoch (an epoch visits every view). 0 = the original
            slices only. Plain optimiser only.
        slices: Slice axis, intensity and 2.5D settings.
        augment: Augmentation (cached runs: only through ``cached_views``, see ``embedding_cache``).
        embedding_cache: ``auto`` (when the encoder is frozen), ``on`` or ``off``.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        mixed_precision: ``auto`` (bf16 on CUDA, off on CPU), ``bf16``, ``fp16`` or ``off``.
        gradient_checkpointing: Recompute encoder activations in the backward pass (saves GPU memory).
        nsd_tolerance_mm: Tolerance of the normalised surface Dice.
        checkpoint_every: Save a resumable checkpoint every N epochs.
    """

    backbone: str = "litemedsam"
    finetune: FineTuneConfig = field(default_factory=FineTuneConfig)
    optimiser: Optimiser = Optimiser.PLAIN
    bilevel: BiLevelConfig = field(default_factory=BiLevelConfig)
    prompt_mode: PromptMode = PromptMode.AUTOMATIC
    epochs: int = 20
    min_steps: int = 0
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 10
    poly_power: float = 0.9
    loss: LossKind = LossKind.DICE_CE
    dice_weight: float = 0.5
    ce_weight: float = 0.5
    val_fraction: float = 0.2
    patience: int = 20
    seed: int = 0
    empty_slices: EmptySlicePolicy = EmptySlicePolicy.KEEP_FRACTION
    empty_keep_fraction: float = 0.1
    presence_weight: float = 0.0
    prompt_mix: float = 0.0
    cached_views: int = 0
    slices: SliceConfig = field(default_factory=SliceConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    embedding_cache: EmbeddingCacheMode = EmbeddingCacheMode.AUTO
    device: str = "auto"
    mixed_precision: MixedPrecision = MixedPrecision.AUTO
    gradient_checkpointing: bool = False
    nsd_tolerance_mm: float = 1.0
    checkpoint_every: int = 1

    def __post_init__(self) -> None:
        get_backbone(self.backbone)
        if isinstance(self.finetune, dict):
            self.finetune = config_from_dict(FineTuneConfig, self.finetune, where="finetune")
        if isinstance(self.slices, dict):
            data = dict(self.slices)
            if isinstance(data.get("intensity"), dict):
                data["intensity"] = config_from_dict(IntensityConfig, data["intensity"], where="slices.intensity")
            self.slices = config_from_dict(SliceConfig, data, where="slices")
        if isinstance(self.bilevel, dict):
            self.bilevel = config_from_dict(BiLevelConfig, self.bilevel, where="bilevel")
        if isinstance(self.augment, dict):
            self.augment = config_from_dict(AugmentConfig, self.augment, where="augment")
        self.optimiser = Optimiser.parse(self.optimiser, what="optimiser")
        self.prompt_mode = PromptMode.parse(self.prompt_mode, what="prompt mode")
        self.loss = LossKind.parse(self.loss, what="loss")
        self.empty_slices = EmptySlicePolicy.parse(self.empty_slices, what="empty-slice policy")
        self.embedding_cache = EmbeddingCacheMode.parse(self.embedding_cache, what="embedding_cache")
        self.mixed_precision = MixedPrecision.parse(self.mixed_precision, what="mixed_precision")
        for name in ("epochs", "batch_size", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ConfigurationError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if int(self.min_steps) < 0:
            raise ConfigurationError(f"min_steps must be >= 0, got {self.min_steps}.")
        if float(self.lr) <= 0:
            raise ConfigurationError(f"lr must be positive, got {self.lr}.")
        if not 0.0 <= float(self.val_fraction) < 1.0:
            raise ConfigurationError(f"val_fraction must be in [0, 1), got {self.val_fraction}.")
        if float(self.presence_weight) < 0:
            raise ConfigurationError(f"presence_weight must be >= 0, got {self.presence_weight}.")
        if not 0.0 <= float(self.prompt_mix) <= 1.0:
            raise ConfigurationError(f"prompt_mix is a share of steps in [0, 1], got {self.prompt_mix}.")
        if int(self.cached_views) < 0:
            raise ConfigurationError(f"cached_views must be >= 0, got {self.cached_views}.")
        if self.cached_views and not self.augment.enabled:
            raise ConfigurationError("cached_views makes augmented views: it needs augment.enabled true.")
        if self.presence_weight > 0 and PRESENCE_HEAD not in self.finetune.train_modules:
            self.finetune.train_modules.append(PRESENCE_HEAD)  # saved with the card: loading trains it too
        if (self.presence_weight > 0 or self.prompt_mix > 0) and self.prompt_mode is not PromptMode.AUTOMATIC:
            raise ConfigurationError(
                f"presence_weight and prompt_mix shape automatic-mode models; prompt_mode is '{self.prompt_mode}'. "
                "Set prompt_mode to 'automatic' or both to 0."
            )
        if self.dice_weight < 0 or self.ce_weight < 0 or self.dice_weight + self.ce_weight == 0:
            raise ConfigurationError("dice_weight and ce_weight must be >= 0 and not both 0.")
        self._check_bilevel()

    def _check_bilevel(self) -> None:
        optimiser = self.optimiser
        if optimiser is Optimiser.PLAIN:
            return
        if self.cached_views:
            raise ConfigurationError(
                f"cached_views works with the plain optimiser; optimiser '{optimiser.value}' splits the training "
                "slices (D1/D2), and views of one slice would land on both sides. Set cached_views to 0."
            )
        if self.prompt_mix:
            raise ConfigurationError(
                f"prompt_mix works with the plain optimiser; optimiser '{optimiser.value}' learns the prompt the "
                "model answers without a box. Set prompt_mix to 0."
            )
        if not self.finetune.learned_prompt.enabled:
            raise ConfigurationError(
                f"optimiser '{optimiser.value}' learns a prompt: set finetune.learned_prompt.enabled to true "
                "(the blo_sam preset does)."
            )
        if self.prompt_mode is not PromptMode.AUTOMATIC:
            raise ConfigurationError(
                f"optimiser '{optimiser.value}' trains prompt-free segmentation; prompt_mode must be 'automatic', "
                f"got '{self.prompt_mode}'."
            )
        if optimiser is Optimiser.BILEVEL and self.finetune.method is Method.CONV_LORA:
            raise ConfigurationError(
                "BLO-SAM's bi-level optimiser trains decoder weights and a prompt; it does not combine with "
                "Conv-LoRA. Use finetune.method 'lora' (the blo_sam preset) or optimiser 'plain'."
            )
        if optimiser is Optimiser.BILEVEL and self.mixed_precision is MixedPrecision.FP16:
            raise ConfigurationError(
                "BLO-SAM's bi-level optimiser does not support fp16 loss scaling; set mixed_precision to 'bf16' "
                "(or 'off')."
            )
        second = self.bilevel.hypergradient is Hypergradient.SECOND
        if optimiser is Optimiser.BILEVEL and second and not self.encoder_frozen:
            raise ConfigurationError(
                "The second-order hypergradient needs a frozen image encoder (finetune.scope 'decoder', not "
                f"Conv-LoRA); this configuration trains the encoder ({self.finetune.method}, {self.finetune.scope}). "
                "Use bilevel.hypergradient 'first', or the decoder scope."
            )

    @property
    def encoder_frozen(self) -> bool:
        """True when no encoder parameter learns (so image embeddings can be cached)."""
        return self.finetune.method is not Method.CONV_LORA and self.finetune.scope is Scope.DECODER

    @property
    def uses_cache(self) -> bool:
        """Whether this run uses the image-embedding cache."""
        if self.embedding_cache is EmbeddingCacheMode.ON:
            if not self.encoder_frozen:
                raise ConfigurationError(
                    "embedding_cache 'on' needs a frozen encoder (scope 'decoder', not Conv-LoRA)."
                )
            return True
        return self.embedding_cache is EmbeddingCacheMode.AUTO and self.encoder_frozen

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a dict; unknown keys raise :class:`ConfigurationError` naming them."""
        return config_from_dict(cls, data)
