"""Fine-tuning settings: method, scope and each method's own configuration (no torch needed).

The Slicer panel and the preset list read these before PyTorch is installed, so this module and the
method ``config`` modules it imports never import torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from samtune.enums import StrEnum
from samtune.errors import ConfigurationError
from samtune.peft.adapter.config import AdapterConfig
from samtune.peft.conv_lora.config import ConvLoRAConfig
from samtune.peft.lora.config import LoRAConfig


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
