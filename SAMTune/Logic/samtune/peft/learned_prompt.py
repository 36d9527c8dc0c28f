"""A learnable prompt embedding for prompt-free (automatic) segmentation, as BLO-SAM.

With no box and no point, SAM's prompt encoder returns no sparse token and the dense embedding
``no_mask_embed`` broadcast over the image-embedding grid. :class:`LearnedPrompt` replaces that
output with learnable parameters: a dense ``C``-vector broadcast the same way (what BLO-SAM's
reference code learns) and, optionally, a few learnable sparse tokens. The dense vector starts as
the pretrained ``no_mask_embed``, so attaching a prompt without sparse tokens changes no output;
sparse tokens start as SAM's "not a point" padding embedding. The prompt is saved with the trained
model and used whenever the model is asked for a mask without a user prompt.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from samtune.peft.config import LearnedPromptConfig

#: Prefix of the learned prompt's parameter names inside a model.
PROMPT_PREFIX = "learned_prompt."


class LearnedPrompt(nn.Module):
    """Learnable sparse and dense prompt embeddings for automatic mode.

    Args:
        prompt_encoder: The model's (frozen) SAM ``PromptEncoder``; its ``no_mask_embed`` and
            ``not_a_point_embed`` initialise the parameters.
        sparse_tokens: Number of learnable sparse tokens.
    """

    def __init__(self, prompt_encoder: nn.Module, *, sparse_tokens: int = 0) -> None:
        super().__init__()
        encoder: Any = prompt_encoder
        no_mask = encoder.no_mask_embed.weight.detach().reshape(-1)
        self.grid = tuple(int(s) for s in encoder.image_embedding_size)
        self.dense = nn.Parameter(no_mask.clone())
        not_a_point = encoder.not_a_point_embed.weight.detach().reshape(1, -1)
        self.sparse = nn.Parameter(not_a_point.repeat(int(sparse_tokens), 1).clone())

    @property
    def sparse_tokens(self) -> int:
        """Number of learnable sparse tokens."""
        return int(self.sparse.shape[0])

    def forward(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Sparse ``BxNxC`` and dense ``BxCxHexWe`` embeddings for ``batch_size`` items."""
        channels = self.dense.shape[0]
        sparse = self.sparse.unsqueeze(0).expand(batch_size, -1, -1)
        dense = self.dense.reshape(1, channels, 1, 1).expand(batch_size, channels, *self.grid)
        return sparse, dense


def attach_learned_prompt(model: nn.Module, config: LearnedPromptConfig) -> LearnedPrompt | None:
    """Give ``model`` a learnable automatic-mode prompt (trainable); ``None`` when disabled."""
    if not config.enabled:
        setattr(model, "learned_prompt", None)  # noqa: B010 (an nn.Module attribute)
        return None
    prompt = LearnedPrompt(model.get_submodule("prompt_encoder"), sparse_tokens=config.sparse_tokens)
    prompt.sparse.requires_grad_(prompt.sparse_tokens > 0)
    device = next(model.parameters()).device
    model.learned_prompt = prompt.to(device)
    return prompt


def prompt_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The learned prompt's trainable parameters (empty without one)."""
    return [p for n, p in model.named_parameters() if n.startswith(PROMPT_PREFIX) and p.requires_grad]


__all__ = ["PROMPT_PREFIX", "LearnedPrompt", "LearnedPromptConfig", "attach_learned_prompt", "prompt_parameters"]
