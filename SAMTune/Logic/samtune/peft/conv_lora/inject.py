"""Injecting Conv-LoRA into a SAM model's image encoder."""

from __future__ import annotations

import torch
from torch import nn

from samtune.peft.base import InjectionReport, inject
from samtune.peft.config import ConvLoRAConfig
from samtune.peft.conv_lora.layer import ConvLoRAQKV
from samtune.peft.targets import encoder_blocks, select_blocks


def inject_conv_lora(model: nn.Module, config: ConvLoRAConfig) -> list[InjectionReport]:
    """Wrap the fused qkv of the chosen encoder blocks with Conv-LoRA."""
    blocks = encoder_blocks(model)
    chosen = select_blocks(len(blocks), config.encoder_blocks)

    def make(name: str, module: nn.Module) -> nn.Module:
        return ConvLoRAQKV(
            module,  # type: ignore[arg-type]
            rank=config.rank,
            alpha=config.alpha,
            scales=config.scales,
            noise=config.noise,
            balance_weight=config.balance_weight,
        )

    patterns = [f"{blocks[i][0]}.attn.qkv" for i in chosen]
    return [inject(model, patterns, make, method="conv_lora (encoder qkv)", what="encoder qkv")]


def balance_loss(model: nn.Module) -> torch.Tensor:
    """Sum of the load-balancing losses of every Conv-LoRA layer from the last forward pass."""
    losses = [m.balance_loss for m in model.modules() if isinstance(m, ConvLoRAQKV)]
    if not losses:
        return torch.zeros(())
    return torch.stack([loss.to(losses[0].device) for loss in losses]).sum()
