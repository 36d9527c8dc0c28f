"""Injecting adapters into a SAM model."""

from __future__ import annotations

from torch import nn

from samtune.peft.adapter.layer import ParallelAdapter, SerialAdapter
from samtune.peft.base import InjectionReport, inject
from samtune.peft.config import AdapterConfig
from samtune.peft.targets import encoder_blocks, select_blocks

_DECODER_SERIAL = (
    "mask_decoder.transformer.layers.*.cross_attn_token_to_image",
    "mask_decoder.transformer.layers.*.cross_attn_image_to_token",
)
_DECODER_PARALLEL = ("mask_decoder.transformer.layers.*.mlp",)


def inject_adapters(model: nn.Module, config: AdapterConfig, *, scope_encoder: bool = True) -> list[InjectionReport]:
    """Add adapters to the chosen encoder blocks and/or the decoder (each wrapper has its own weights)."""
    reports = []

    def serial(name: str, module: nn.Module) -> nn.Module:
        return SerialAdapter(module, ratio=config.ratio)

    def parallel(name: str, module: nn.Module) -> nn.Module:
        return ParallelAdapter(module, ratio=config.ratio, scale=config.mlp_scale)

    if config.encoder and scope_encoder:
        blocks = encoder_blocks(model)
        chosen = [blocks[i][0] for i in select_blocks(len(blocks), config.encoder_blocks)]
        reports.append(
            inject(
                model,
                [f"{b}.attn" for b in chosen],
                serial,
                method="adapter (encoder attn)",
                what="encoder attention",
            )
        )
        reports.append(
            inject(
                model,
                [f"{b}.mlp" for b in chosen],
                parallel,
                method="adapter (encoder mlp)",
                what="encoder MLP",
            )
        )
    if config.decoder:
        reports.append(
            inject(
                model,
                _DECODER_SERIAL,
                serial,
                method="adapter (decoder attn)",
                what="decoder cross-attention",
            )
        )
        reports.append(inject(model, _DECODER_PARALLEL, parallel, method="adapter (decoder mlp)", what="decoder MLP"))
    return reports
