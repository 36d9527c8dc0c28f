"""LoRA wrappers: a plain linear layer, and a fused ``qkv`` layer that knows its channel layout.

``output = base(x) + scaling * B(A(x))`` with ``A`` Kaiming-uniform, ``B`` zero (no change at step
0) and ``scaling = alpha / rank``.

Fused qkv layouts (output channels of ``qkv = Linear(dim, ...)``):

* SAM ViT: ``[q (dim) | k (dim) | v (dim)]``.
* TinyViT (MobileSAM, LiteMedSAM): per head ``h``, ``[q_h (key_dim), k_h (key_dim), v_h (d)]``,
  heads one after another (``qkv.view(B, N, heads, -1).split([key_dim, key_dim, d])``). Slicing the
  first and last third, as reference code does, would hit a mix of q, k and v of some heads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from samtune.errors import ConfigurationError
from samtune.peft.base import PeftWrapper


def _lora_pair(in_features: int, out_features: int, rank: int) -> tuple[nn.Linear, nn.Linear]:
    down = nn.Linear(in_features, rank, bias=False)
    up = nn.Linear(rank, out_features, bias=False)
    nn.init.kaiming_uniform_(down.weight, a=math.sqrt(5))
    nn.init.zeros_(up.weight)
    return down, up


class LoRALinear(PeftWrapper):
    """LoRA on an ``nn.Linear`` (decoder ``q_proj`` / ``v_proj``)."""

    mergeable = True

    def __init__(self, base_layer: nn.Linear, *, rank: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__(base_layer)
        self.rank = rank
        self.scaling = alpha / rank
        self.lora_A, self.lora_B = _lora_pair(base_layer.in_features, base_layer.out_features, rank)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def delta_weight(self) -> torch.Tensor:
        """``(out, in)`` weight change ``scaling * B @ A``."""
        return self.scaling * (self.lora_B.weight @ self.lora_A.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        if self.active:
            out = out + self.scaling * self.lora_B(self.lora_A(self.dropout(x)))
        return out

    @torch.no_grad()
    def merge(self) -> None:
        self.base_layer.weight += self.delta_weight().to(self.base_layer.weight.dtype)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        self.base_layer.weight -= self.delta_weight().to(self.base_layer.weight.dtype)
        self.merged = False


class FusedQKVLoRA(PeftWrapper):
    """LoRA on exactly the requested projections of a fused ``qkv`` linear layer.

    Args:
        base_layer: The fused ``qkv`` ``nn.Linear``.
        channels: Output channel indices of each projection (see :func:`vit_qkv_channels`,
            :func:`tinyvit_qkv_channels`).
        projections: Which of ``"q"``, ``"k"``, ``"v"`` to adapt.
        rank: LoRA rank.
        alpha: LoRA alpha (``scaling = alpha / rank``).
    """

    mergeable = True

    def __init__(
        self,
        base_layer: nn.Linear,
        *,
        channels: dict[str, torch.Tensor],
        projections: Sequence[str],
        rank: int,
        alpha: float,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(base_layer)
        unknown = [p for p in projections if p not in ("q", "k", "v")]
        if unknown or not projections:
            raise ConfigurationError(f"qkv projections must be a non-empty subset of q, k, v; got {list(projections)}.")
        total = sum(len(c) for c in channels.values())
        if total != base_layer.out_features:
            raise ConfigurationError(
                f"The qkv layout covers {total} channels but the layer has {base_layer.out_features}; "
                "the backbone's attention layout is not the one expected."
            )
        self.projections = tuple(projections)
        self.rank = rank
        self.scaling = alpha / rank
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_A: Any = nn.ModuleDict()
        self.lora_B: Any = nn.ModuleDict()
        for p in self.projections:
            self.lora_A[p], self.lora_B[p] = _lora_pair(base_layer.in_features, len(channels[p]), rank)
            self.register_buffer(f"index_{p}", channels[p].clone(), persistent=False)

    def _index(self, projection: str) -> torch.Tensor:
        return getattr(self, f"index_{projection}")

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """The qkv output change for input ``x`` (``(..., in)`` -> ``(..., out)``)."""
        x = self.dropout(x)
        out = x.new_zeros(*x.shape[:-1], self.base_layer.out_features)
        for p in self.projections:
            value = self.scaling * self.lora_B[p](self.lora_A[p](x))
            out = out.index_add(-1, self._index(p), value)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        return out + self.delta(x) if self.active else out

    @torch.no_grad()
    def _weight_delta(self) -> torch.Tensor:
        weight = self.base_layer.weight
        full = torch.zeros_like(weight)
        for p in self.projections:
            full[self._index(p)] = (self.scaling * self.lora_B[p].weight @ self.lora_A[p].weight).to(weight.dtype)
        return full

    @torch.no_grad()
    def merge(self) -> None:
        self.base_layer.weight += self._weight_delta()
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        self.base_layer.weight -= self._weight_delta()
        self.merged = False
