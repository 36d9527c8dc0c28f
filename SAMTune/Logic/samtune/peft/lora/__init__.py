"""LoRA: low-rank updates of attention projections (encoder fused qkv, decoder q/v)."""

from typing import TYPE_CHECKING

from samtune._lazy import lazy_exports

if TYPE_CHECKING:
    from samtune.peft.config import LoRAConfig
    from samtune.peft.lora.inject import inject_lora
    from samtune.peft.lora.layer import FusedQKVLoRA, LoRALinear
    from samtune.peft.targets import tinyvit_qkv_channels, vit_qkv_channels

__getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)
