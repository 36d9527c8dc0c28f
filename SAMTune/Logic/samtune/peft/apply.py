"""One entry point: turn a SAM model into a trainable one for a method and a scope."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import nn

from samtune.enums import StrEnum
from samtune.errors import ConfigurationError
from samtune.peft.adapter import AdapterConfig, inject_adapters
from samtune.peft.base import InjectionReport
from samtune.peft.conv_lora import ConvLoRAConfig, inject_conv_lora
from samtune.peft.lora import LoRAConfig, inject_lora


class Method(StrEnum):
    """Fine-tuning method."""

    VANILLA = "vanilla"  # full fine-tuning of the parts in scope
    LORA = "lora"
    ADAPTER = "adapter"
    CONV_LORA = "conv_lora"


class Scope(StrEnum):
    """Which parts of SAM learn."""

    DECODER = "decoder"
    ENCODER_DECODER = "encoder_decoder"


@dataclass
class FineTuneConfig:
    """Method, scope and the method's own settings.

    Attributes:
        method: ``vanilla``, ``lora``, ``adapter`` or ``conv_lora``.
        scope: ``decoder`` or ``encoder_decoder``. Conv-LoRA always adapts the encoder and fully
            fine-tunes the decoder (as the paper); the prompt encoder is always frozen.
        lora: LoRA settings (used by ``lora``).
        adapter: Adapter settings (used by ``adapter``).
        conv_lora: Conv-LoRA settings (used by ``conv_lora``).
    """

    method: str = "lora"
    scope: str = "decoder"
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    conv_lora: ConvLoRAConfig = field(default_factory=ConvLoRAConfig)

    def __post_init__(self) -> None:
        self.method = Method.parse(self.method, what="fine-tuning method").value
        self.scope = Scope.parse(self.scope, what="scope").value
        for name, cls in (("lora", LoRAConfig), ("adapter", AdapterConfig), ("conv_lora", ConvLoRAConfig)):
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, cls(**value))


def _set_trainable(module: nn.Module, trainable: bool) -> None:
    for parameter in module.parameters():
        parameter.requires_grad_(trainable)


def apply_finetuning(
    model: nn.Module, config: FineTuneConfig, *, reinitialised: Sequence[str] = ()
) -> list[InjectionReport]:
    """Freeze the model, inject the method and mark exactly what must learn.

    Args:
        model: A :class:`~samtune.models.SamModel` (modified in place).
        config: Method and scope.
        reinitialised: Dotted names of modules that were re-initialised (e.g. decoder heads after a
            change of output count); they are always trainable, whatever the method.

    Returns:
        Reports of what was wrapped (empty for vanilla).
    """
    method, scope = Method.parse(config.method), Scope.parse(config.scope)
    encoder_in_scope = scope is Scope.ENCODER_DECODER
    _set_trainable(model, False)
    reports: list[InjectionReport] = []
    if method is Method.VANILLA:
        _set_trainable(model.get_submodule("mask_decoder"), True)
        if encoder_in_scope:
            _set_trainable(model.get_submodule("image_encoder"), True)
    elif method is Method.LORA:
        lora = config.lora
        if not encoder_in_scope and not lora.decoder:
            raise ConfigurationError("Decoder-only LoRA needs lora.decoder = true.")
        reports = inject_lora(model, lora, scope_encoder=encoder_in_scope)
    elif method is Method.ADAPTER:
        if not encoder_in_scope and not config.adapter.decoder:
            raise ConfigurationError("Decoder-only adapters need adapter.decoder = true.")
        reports = inject_adapters(model, config.adapter, scope_encoder=encoder_in_scope)
    else:  # Conv-LoRA: encoder experts + fully fine-tuned decoder
        reports = inject_conv_lora(model, config.conv_lora)
        _set_trainable(model.get_submodule("mask_decoder"), True)
    # Injected wrappers' own parameters are trainable, their base layers frozen.
    from samtune.peft.base import peft_wrappers

    for _, wrapper in peft_wrappers(model):
        for _, parameter in wrapper.adapter_parameters():
            parameter.requires_grad_(True)
    for name in reinitialised:
        _set_trainable(model.get_submodule(name), True)
    _set_trainable(model.get_submodule("prompt_encoder"), False)
    return reports


def trainable_parameter_count(model: nn.Module) -> int:
    """Number of parameters that will receive gradients."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
