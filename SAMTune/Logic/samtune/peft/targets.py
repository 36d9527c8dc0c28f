"""Where the methods attach in each backbone family: encoder blocks, attention layouts, decoder layers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from samtune.errors import ConfigurationError


def vit_qkv_channels(dim: int) -> dict[str, torch.Tensor]:
    """Channel indices of q, k and v in a SAM ViT fused qkv of width ``3 * dim``."""
    return {p: torch.arange(i * dim, (i + 1) * dim) for i, p in enumerate("qkv")}


def tinyvit_qkv_channels(num_heads: int, key_dim: int, value_dim: int) -> dict[str, torch.Tensor]:
    """Channel indices of q, k and v in TinyViT's head-interleaved fused qkv."""
    per_head = 2 * key_dim + value_dim
    offsets = {"q": (0, key_dim), "k": (key_dim, 2 * key_dim), "v": (2 * key_dim, per_head)}
    return {
        p: torch.cat([torch.arange(h * per_head + lo, h * per_head + hi) for h in range(num_heads)])
        for p, (lo, hi) in offsets.items()
    }


#: Decoder attention layers of SAM's TwoWayTransformer (both blocks + the final attention).
DECODER_ATTENTIONS = (
    "mask_decoder.transformer.layers.*.self_attn",
    "mask_decoder.transformer.layers.*.cross_attn_token_to_image",
    "mask_decoder.transformer.layers.*.cross_attn_image_to_token",
    "mask_decoder.transformer.final_attn_token_to_image",
)


def encoder_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The encoder's transformer blocks in order, as ``(dotted name, block)``.

    SAM ViT: ``image_encoder.blocks.N``. TinyViT: ``image_encoder.layers.S.blocks.N`` of the
    attention stages (stage 0 is convolutional and has no attention).
    """
    encoder = model.get_submodule("image_encoder")
    blocks = []
    for name, module in encoder.named_modules():
        if hasattr(module, "attn") and hasattr(module, "mlp") and hasattr(module.attn, "qkv"):
            blocks.append((f"image_encoder.{name}", module))
    if not blocks:
        raise ConfigurationError("The image encoder has no transformer blocks with a fused qkv attention.")
    return blocks


def select_blocks(n_blocks: int, blocks: Sequence[int] | str | None) -> list[int]:
    """Resolve a block selection: ``None``/``"all"``, ``"ends"`` (first two and last two) or indices.

    Negative indices count from the end.

    Raises:
        ConfigurationError: An index outside ``0..n_blocks-1``.
    """
    if blocks is None or blocks == "all":
        return list(range(n_blocks))
    if blocks == "ends":
        return sorted({0, 1, n_blocks - 2, n_blocks - 1} & set(range(n_blocks)))
    if isinstance(blocks, str):
        raise ConfigurationError(f"Blocks must be 'all', 'ends' or a list of indices, got '{blocks}'.")
    chosen = []
    for b in blocks:
        index = int(b) + n_blocks if int(b) < 0 else int(b)
        if not 0 <= index < n_blocks:
            raise ConfigurationError(f"Encoder block {b} does not exist: this backbone has blocks 0..{n_blocks - 1}.")
        chosen.append(index)
    return sorted(set(chosen))


def qkv_channels(attention: Any) -> dict[str, torch.Tensor]:
    """Channel indices of q, k, v in ``attention.qkv`` for either layout."""
    if hasattr(attention, "key_dim") and hasattr(attention, "d"):  # TinyViT Attention
        return tinyvit_qkv_channels(int(attention.num_heads), int(attention.key_dim), int(attention.d))
    out = attention.qkv.out_features
    if out % 3:
        raise ConfigurationError(f"A fused qkv of width {out} is not three equal parts; unknown attention layout.")
    return vit_qkv_channels(out // 3)
