"""One entry point: turn a SAM model into a trainable one for a method and a scope."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from samtune.errors import ConfigurationError
from samtune.peft.adapter.inject import inject_adapters
from samtune.peft.base import InjectionReport
from samtune.peft.config import FineTuneConfig, Method, Scope
from samtune.peft.conv_lora.inject import inject_conv_lora
from samtune.peft.learned_prompt import attach_learned_prompt
from samtune.peft.lora.inject import inject_lora


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
    method, scope = config.method, config.scope
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
    for name in [*config.train_modules, *reinitialised]:
        _set_trainable(_submodule(model, name), True)
    _set_trainable(model.get_submodule("prompt_encoder"), False)
    attach_learned_prompt(model, config.learned_prompt)
    return reports


def _submodule(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        from samtune.errors import unknown_name

        names = [n for n, _ in model.named_modules() if n.count(".") == 1 and not n.startswith("image_encoder.")]
        raise unknown_name("module in train_modules", name, names) from None


def trainable_parameter_count(model: nn.Module) -> int:
    """Number of parameters that will receive gradients."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
