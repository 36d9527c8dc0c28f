"""Adapter (Houlsby / Med-SA layout) configuration."""

from __future__ import annotations

from dataclasses import dataclass

from samtune.errors import ConfigurationError


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
