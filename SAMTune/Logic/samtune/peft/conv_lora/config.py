"""Conv-LoRA configuration."""

from __future__ import annotations

from dataclasses import dataclass, field

from samtune.errors import ConfigurationError


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
