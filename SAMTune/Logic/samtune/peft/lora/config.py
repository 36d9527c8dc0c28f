"""LoRA configuration."""

from __future__ import annotations

from dataclasses import dataclass, field

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
