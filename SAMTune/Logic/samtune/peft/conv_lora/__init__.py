"""Conv-LoRA: convolution experts with a noisy top-1 router inside a LoRA bottleneck."""

from samtune.peft.conv_lora.config import ConvLoRAConfig
from samtune.peft.conv_lora.inject import balance_loss, inject_conv_lora
from samtune.peft.conv_lora.layer import ConvExpert, ConvLoRAQKV

__all__ = ["ConvExpert", "ConvLoRAConfig", "ConvLoRAQKV", "balance_loss", "inject_conv_lora"]
