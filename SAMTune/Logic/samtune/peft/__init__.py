"""Parameter-efficient fine-tuning of SAM: LoRA, Adapter, Conv-LoRA, and full fine-tuning.

Every method follows one wrapper contract (:class:`PeftWrapper`): the original layer is kept as
``base_layer`` and frozen, the delta starts at zero, wrappers can be disabled, and their own
parameters form an adapter-only state dict. LoRA wrappers also merge and unmerge.
"""

from typing import TYPE_CHECKING

from samtune._lazy import lazy_exports

if TYPE_CHECKING:
    from samtune.peft.adapter import AdapterConfig, inject_adapters
    from samtune.peft.apply import apply_finetuning, trainable_parameter_count
    from samtune.peft.base import (
        InjectionReport,
        PeftWrapper,
        adapter_state_dict,
        merge_adapters,
        peft_wrappers,
        set_adapters_enabled,
        unmerge_adapters,
    )
    from samtune.peft.config import FineTuneConfig, LearnedPromptConfig, Method, Scope
    from samtune.peft.conv_lora import ConvLoRAConfig, balance_loss, inject_conv_lora
    from samtune.peft.learned_prompt import LearnedPrompt, attach_learned_prompt, prompt_parameters
    from samtune.peft.lora import LoRAConfig, inject_lora

__getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)
