"""Bottleneck adapter wrappers: serial (after attention, with skip) and parallel (beside the MLP)."""

from __future__ import annotations

import torch
from torch import nn

from samtune.peft.base import PeftWrapper


class Bottleneck(nn.Module):
    """``Linear(D, r) -> GELU -> Linear(r, D)`` with a zero-initialised up-projection."""

    def __init__(self, dim: int, ratio: float) -> None:
        super().__init__()
        hidden = max(1, int(round(dim * ratio)))
        self.down = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.up = nn.Linear(hidden, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x)))


def _output_dim(module: nn.Module) -> int:
    """Width of a block's output: its last Linear layer's ``out_features``."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    return int(linears[-1].out_features)


class SerialAdapter(PeftWrapper):
    """``y = f(x); y + adapter(y)`` — after an attention layer (identity at step 0)."""

    def __init__(self, base_layer: nn.Module, *, ratio: float) -> None:
        super().__init__(base_layer)
        self.adapter = Bottleneck(_output_dim(base_layer), ratio)

    def forward(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(*args, **kwargs)
        return out + self.adapter(out) if self.active else out


class ParallelAdapter(PeftWrapper):
    """``f(x) + scale * adapter(x)`` — beside an MLP (no skip inside the adapter)."""

    def __init__(self, base_layer: nn.Module, *, ratio: float, scale: float) -> None:
        super().__init__(base_layer)
        self.scale = scale
        dim = [m for m in base_layer.modules() if isinstance(m, nn.Linear)][0].in_features
        self.adapter = Bottleneck(dim, ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        return out + self.scale * self.adapter(x) if self.active else out
