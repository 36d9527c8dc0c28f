"""Fine-tuning settings, in one place: method, scope and each method's own configuration (LoRA,
Adapter, Conv-LoRA, the learned prompt). No torch: the Slicer panel and the preset list read these
before PyTorch is installed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from samtune.enums import StrEnum
from samtune.errors import ConfigurationError


@dataclass
class LoRAConfig:
    """Low-rank adaptation of attention projections.

    Attributes:
        rank: Rank of the update (default 4, as SAMed and the finetune-SAM study).
        alpha: Scaling numerator; the update is multiplied by ``alpha / rank``.
        dropout: Dropout on the LoRA input.
        encoder: Adapt the image encoder's fused qkv.
        encoder_projections: Which of q, k, v in the encoder (default q and v).
        encoder_blocks: ``"all"``, ``"ends"`` (first two and last two) or block indices.
        decoder: Adapt the mask decoder's attention ``q_proj`` / ``v_proj`` (self-attention, both
            cross-attentions and the final attention).
        decoder_projections: Which decoder projections (``q_proj``, ``k_proj``, ``v_proj``).
    """

    rank: int = 4
    alpha: float = 4.0
    dropout: float = 0.0
    encoder: bool = True
    encoder_projections: list[str] = field(default_factory=lambda: ["q", "v"])
    encoder_blocks: str | list[int] = "all"
    decoder: bool = True
    decoder_projections: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])

    def __post_init__(self) -> None:
        if int(self.rank) < 1:
            raise ConfigurationError(f"LoRA rank must be at least 1, got {self.rank}.")
        if float(self.alpha) <= 0:
            raise ConfigurationError(f"LoRA alpha must be positive, got {self.alpha}.")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigurationError(f"LoRA dropout must be in [0, 1), got {self.dropout}.")
        bad = [p for p in self.encoder_projections if p not in ("q", "k", "v")]
        if bad or not self.encoder_projections:
            raise ConfigurationError(f"encoder_projections must be a non-empty subset of q, k, v; got {bad or '[]'}.")
        bad = [p for p in self.decoder_projections if p not in ("q_proj", "k_proj", "v_proj")]
        if bad or not self.decoder_projections:
            raise ConfigurationError(
                f"decoder_projections must be a non-empty subset of q_proj, k_proj, v_proj; got {bad or []}."
            )
        if not self.encoder and not self.decoder:
            raise ConfigurationError("LoRA needs encoder=True, decoder=True or both.")


@dataclass
class AdapterConfig:
    """Bottleneck adapters after attention (with skip) and parallel to the MLP.

    Attributes:
        ratio: Bottleneck width as a fraction of the layer width (0.25 as Med-SA).
        mlp_scale: Scale of the adapter parallel to the MLP (0.5 as Med-SA).
        encoder: Add adapters to image-encoder blocks.
        encoder_blocks: ``"ends"`` (first two and last two, computed from the depth), ``"all"`` or indices.
        decoder: Add adapters to the mask decoder (after both cross-attentions, parallel to the MLP).
    """

    ratio: float = 0.25
    mlp_scale: float = 0.5
    encoder: bool = True
    encoder_blocks: str | list[int] = "ends"
    decoder: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < float(self.ratio) <= 1.0:
            raise ConfigurationError(f"Adapter ratio must be in (0, 1], got {self.ratio}.")
        if float(self.mlp_scale) <= 0:
            raise ConfigurationError(f"Adapter mlp_scale must be positive, got {self.mlp_scale}.")
        if not self.encoder and not self.decoder:
            raise ConfigurationError("Adapter needs encoder=True, decoder=True or both.")


@dataclass
class ConvLoRAConfig:
    """Mixture of convolution experts inside a LoRA bottleneck on the encoder's fused qkv.

    Attributes:
        rank: Bottleneck width (3 in the reference code).
        alpha: Scaling numerator (32 in the reference code); update scaled by ``alpha / rank``.
        scales: Up-scaling ratio of each expert; the paper uses 8 experts at 1..8.
        noise: Noisy gating during training.
        balance_weight: Weight of each layer's load-balancing loss (0.01).
        encoder_blocks: ``"all"``, ``"ends"`` or block indices.
    """

    rank: int = 3
    alpha: float = 32.0
    scales: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 7, 8])
    noise: bool = True
    balance_weight: float = 0.01
    encoder_blocks: str | list[int] = "all"

    def __post_init__(self) -> None:
        if int(self.rank) < 1:
            raise ConfigurationError(f"Conv-LoRA rank must be at least 1, got {self.rank}.")
        if not self.scales or any(int(s) < 1 for s in self.scales):
            raise ConfigurationError(f"Conv-LoRA scales must be positive integers, got {self.scales}.")
        if float(self.balance_weight) < 0:
            raise ConfigurationError(f"balance_weight must be >= 0, got {self.balance_weight}.")


@dataclass
class LearnedPromptConfig:
    """Whether a model learns its automatic-mode prompt, and its shape.

    Attributes:
        enabled: Attach a learnable prompt (BLO-SAM presets turn it on).
        sparse_tokens: Learnable sparse tokens besides the dense embedding (0 = dense only, as the
            BLO-SAM reference code).
    """

    enabled: bool = False
    sparse_tokens: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ConfigurationError(f"learned_prompt.enabled must be true or false, got {self.enabled!r}.")
        if int(self.sparse_tokens) < 0 or int(self.sparse_tokens) > 16:
            raise ConfigurationError(f"learned_prompt.sparse_tokens must be 0..16, got {self.sparse_tokens}.")
        self.sparse_tokens = int(self.sparse_tokens)


class Method(StrEnum):
    """Fine-tuning method."""

    VANILLA = "vanilla"  # full fine-tuning of the parts in scope
    LORA = "lora"
    ADAPTER = "adapter"
    CONV_LORA = "conv_lora"


class Scope(StrEnum):
    """Which parts of SAM learn."""

    DECODER = "decoder"
    ENCODER_DECODER = "encoder_decoder"


@dataclass
class FineTuneConfig:
    """Method, scope and the method's own settings.

    Attributes:
        method: ``vanilla``, ``lora``, ``adapter`` or ``conv_lora``.
        scope: ``decoder`` or ``encoder_decoder``. Conv-LoRA always adapts the encoder and fully
            fine-tunes the decoder (as the paper); the prompt encoder is always frozen.
        lora: LoRA settings (used by ``lora``).
        adapter: Adapter settings (used by ``adapter``).
        conv_lora: Conv-LoRA settings (used by ``conv_lora``).
        train_modules: Dotted names of further modules trained in full, whatever the method (BLO-SAM
            trains ``mask_decoder.output_upscaling`` and ``mask_decoder.output_hypernetworks_mlps``).
        learned_prompt: A learnable automatic-mode prompt (BLO-SAM), saved with the model.
    """

    method: Method = Method.LORA
    scope: Scope = Scope.DECODER
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    conv_lora: ConvLoRAConfig = field(default_factory=ConvLoRAConfig)
    train_modules: list[str] = field(default_factory=list)
    learned_prompt: LearnedPromptConfig = field(default_factory=LearnedPromptConfig)

    def __post_init__(self) -> None:
        self.method = Method.parse(self.method, what="fine-tuning method")
        self.scope = Scope.parse(self.scope, what="scope")
        for name, cls in (
            ("lora", LoRAConfig),
            ("adapter", AdapterConfig),
            ("conv_lora", ConvLoRAConfig),
            ("learned_prompt", LearnedPromptConfig),
        ):
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, cls(**value))
        if isinstance(self.train_modules, str) or not all(isinstance(m, str) for m in self.train_modules):
            raise ConfigurationError(f"train_modules must be a list of module names, got {self.train_modules!r}.")
        self.train_modules = list(self.train_modules)
