"""Gradient checkpointing of the image encoder's blocks (recompute activations in backward)."""

from __future__ import annotations

import types
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from samtune.peft.targets import encoder_blocks


def enable_gradient_checkpointing(model: nn.Module) -> int:
    """Make every encoder block recompute its activations during backward; returns the block count.

    Saves GPU memory at the cost of one more forward pass per block. Has no effect in eval mode
    or without gradients.
    """
    blocks = encoder_blocks(model)
    for _, block in blocks:
        if getattr(block, "_samtune_checkpointed", False):
            continue
        original = block.forward

        def forward(self: nn.Module, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            if self.training and torch.is_grad_enabled():
                return checkpoint(_original, *args, use_reentrant=False, **kwargs)
            return _original(*args, **kwargs)

        block.forward = types.MethodType(forward, block)  # type: ignore[method-assign]
        block._samtune_checkpointed = True  # type: ignore[assignment]
    return len(blocks)
