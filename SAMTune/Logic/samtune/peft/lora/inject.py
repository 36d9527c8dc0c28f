"""Injecting LoRA into a SAM model."""

from __future__ import annotations

from torch import nn

from samtune.peft.base import InjectionReport, inject
from samtune.peft.config import LoRAConfig
from samtune.peft.lora.layer import FusedQKVLoRA, LoRALinear
from samtune.peft.targets import DECODER_ATTENTIONS, encoder_blocks, qkv_channels, select_blocks


def inject_lora(model: nn.Module, config: LoRAConfig, *, scope_encoder: bool = True) -> list[InjectionReport]:
    """Wrap the encoder's fused qkv and/or the decoder's attention projections with LoRA.

    Args:
        model: A :class:`~samtune.models.SamModel` (modified in place).
        config: LoRA settings.
        scope_encoder: ``False`` skips the encoder even if ``config.encoder`` (decoder-only scope).

    Returns:
        One report per part adapted (encoder, decoder).
    """
    reports = []
    if config.encoder and scope_encoder:
        blocks = encoder_blocks(model)
        chosen = select_blocks(len(blocks), config.encoder_blocks)
        patterns = [f"{blocks[i][0]}.attn.qkv" for i in chosen]

        def make_qkv(name: str, module: nn.Module) -> nn.Module:
            attention = model.get_submodule(name.rsplit(".", 1)[0])
            return FusedQKVLoRA(
                module,  # type: ignore[arg-type]
                channels=qkv_channels(attention),
                projections=config.encoder_projections,
                rank=config.rank,
                alpha=config.alpha,
                dropout=config.dropout,
            )

        reports.append(inject(model, patterns, make_qkv, method="lora (encoder qkv)", what="encoder qkv"))
    if config.decoder:
        patterns = [f"{a}.{p}" for a in DECODER_ATTENTIONS for p in config.decoder_projections]

        def make_linear(name: str, module: nn.Module) -> nn.Module:
            return LoRALinear(module, rank=config.rank, alpha=config.alpha, dropout=config.dropout)  # type: ignore[arg-type]

        reports.append(inject(model, patterns, make_linear, method="lora (decoder)", what="decoder attention"))
    return reports
