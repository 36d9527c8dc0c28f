"""LoRA: low-rank updates of attention projections (encoder fused qkv, decoder q/v)."""

from samtune.peft.lora.config import LoRAConfig
from samtune.peft.lora.inject import inject_lora
from samtune.peft.lora.layer import FusedQKVLoRA, LoRALinear
from samtune.peft.targets import tinyvit_qkv_channels, vit_qkv_channels

__all__ = [
    "FusedQKVLoRA",
    "LoRAConfig",
    "LoRALinear",
    "inject_lora",
    "tinyvit_qkv_channels",
    "vit_qkv_channels",
]
