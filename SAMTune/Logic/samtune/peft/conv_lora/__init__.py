"""Conv-LoRA: convolution experts with a noisy top-1 router inside a LoRA bottleneck."""

from typing import TYPE_CHECKING

from samtune._lazy import lazy_exports

if TYPE_CHECKING:
    from samtune.peft.config import ConvLoRAConfig
    from samtune.peft.conv_lora.inject import balance_loss, inject_conv_lora
    from samtune.peft.conv_lora.layer import ConvExpert, ConvLoRAQKV

__getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)
