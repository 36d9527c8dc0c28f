"""Conv-LoRA: a mixture of convolution experts inside the LoRA bottleneck of the encoder's qkv.

``delta(x) = scaling * W_up( z + g * E_e(z) )`` with ``z = W_down(x)`` reshaped to the token grid,
``E_i`` = interpolate up by ``s_i`` -> 3x3 conv -> GELU -> interpolate back, and a noisy top-1 router
picking one expert ``e`` per item with gate value ``g`` = the softmax probability of that expert.
Multiplying by ``g`` is what lets the router learn from the segmentation loss (the reference
implementation does not, so its router only ever sees the balance loss). ``W_up`` is zero at
step 0, so injection changes no output.

Token grids: SAM ViT applies ``qkv`` to ``(B, H, W, C)`` windows or whole maps; TinyViT to
``(B*, N, C)`` with ``N`` a square window. Both are handled.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from samtune.errors import ConfigurationError
from samtune.peft.base import PeftWrapper


def _cv_squared(values: torch.Tensor) -> torch.Tensor:
    """Squared coefficient of variation (0 for a single expert or constant values)."""
    if values.numel() <= 1:
        return values.new_zeros(())
    return values.float().var() / (values.float().mean() ** 2 + 1e-10)


class ConvExpert(nn.Module):
    """Interpolate ``B x r x h x w`` up by ``scale``, 3x3 conv + GELU, interpolate back to ``h x w``."""

    def __init__(self, rank: int, scale: int) -> None:
        super().__init__()
        self.scale = int(scale)
        self.conv = nn.Conv2d(rank, rank, kernel_size=3, padding=1)
        self.act = nn.GELU()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        size = z.shape[-2:]
        if self.scale != 1:
            z = F.interpolate(z, scale_factor=self.scale, mode="bilinear", align_corners=False)
        z = self.act(self.conv(z))
        if self.scale != 1:
            z = F.interpolate(z, size=size, mode="bilinear", align_corners=False)
        return z


class ConvLoRAQKV(PeftWrapper):
    """Conv-LoRA on a fused qkv layer (all of q, k and v, as the paper and reference code).

    Args:
        base_layer: The fused ``qkv`` ``nn.Linear``.
        rank: Bottleneck width ``r``.
        alpha: Scaling numerator (``scaling = alpha / rank``).
        scales: Up-scaling ratio of each expert (default ``1..8``).
        noise: Use noisy gating during training (Shazeer et al.).
        balance_weight: Weight of this layer's load-balancing loss.
    """

    #: Each input picks its own expert (noisy top-1 gate): a traced graph (ONNX export) would freeze
    #: one route, so encoders holding such a layer are never exported (``samtune.models.runtime``).
    routes_per_input = True

    def __init__(
        self,
        base_layer: nn.Linear,
        *,
        rank: int,
        alpha: float,
        scales: Sequence[int],
        noise: bool = True,
        balance_weight: float = 0.01,
    ) -> None:
        super().__init__(base_layer)
        if not scales:
            raise ConfigurationError("Conv-LoRA needs at least one expert scale.")
        self.rank = rank
        self.scaling = alpha / rank
        self.noise = noise
        self.balance_weight = balance_weight
        self.lora_A = nn.Linear(base_layer.in_features, rank, bias=False)
        self.lora_B = nn.Linear(rank, base_layer.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.experts = nn.ModuleList(ConvExpert(rank, s) for s in scales)
        self.router = nn.Linear(rank, len(scales), bias=False)
        self.router_noise = nn.Linear(rank, len(scales), bias=False)
        nn.init.zeros_(self.router.weight)
        nn.init.zeros_(self.router_noise.weight)
        #: Load-balancing loss of the last forward pass (0 when inactive), weighted.
        self.balance_loss: torch.Tensor = torch.zeros(())
        #: How many items each expert received in the last forward pass.
        self.last_counts: torch.Tensor = torch.zeros(len(scales), dtype=torch.long)

    def _grid(self, z: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        """``z`` as ``(items, r, h, w)`` plus the shape to restore."""
        if z.ndim == 4:  # SAM ViT: (B, H, W, r)
            return z.permute(0, 3, 1, 2), tuple(z.shape)
        if z.ndim == 3:  # TinyViT: (B*, N, r) with N a square window
            side = int(round(math.sqrt(z.shape[1])))
            if side * side != z.shape[1]:
                raise ConfigurationError(f"Conv-LoRA needs square token grids, got {z.shape[1]} tokens.")
            return z.transpose(1, 2).reshape(z.shape[0], z.shape[2], side, side), tuple(z.shape)
        raise ConfigurationError(f"Conv-LoRA got an input of unexpected shape {tuple(z.shape)}.")

    @staticmethod
    def _ungrid(grid: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        if len(shape) == 4:
            return grid.permute(0, 2, 3, 1)
        return grid.reshape(shape[0], shape[2], shape[1]).transpose(1, 2)

    def route(self, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Noisy top-1 routing of ``(items, r, h, w)``: ``(expert index, gate value, probabilities)``."""
        pooled = grid.mean(dim=(2, 3))
        logits = self.router(pooled)
        if self.noise and self.training:
            logits = logits + torch.randn_like(logits) * (F.softplus(self.router_noise(pooled)) + 0.01)
        probabilities = logits.softmax(dim=-1)
        gate, expert = probabilities.max(dim=-1)
        return expert, gate, probabilities

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """qkv output change for ``x``."""
        z = self.lora_A(x)
        grid, shape = self._grid(z)
        expert, gate, probabilities = self.route(grid)
        mixed = grid.clone()
        counts = torch.zeros(len(self.experts), dtype=torch.long, device=x.device)
        for e, module in enumerate(self.experts):
            items = (expert == e).nonzero(as_tuple=True)[0]
            if items.numel() == 0:
                continue
            counts[e] = items.numel()
            out = module(grid.index_select(0, items)) * gate.index_select(0, items).view(-1, 1, 1, 1)
            mixed = mixed.index_add(0, items, out)
        importance = probabilities.sum(dim=0)
        self.balance_loss = self.balance_weight * (_cv_squared(importance) + _cv_squared(counts.float()))
        self.last_counts = counts.detach().cpu()
        return self.scaling * self.lora_B(self._ungrid(mixed, shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        if not self.active:
            self.balance_loss = out.new_zeros(())
            return out
        return out + self.delta(x)
