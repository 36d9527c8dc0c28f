"""The wrapper contract every fine-tuning method follows, and the injection report.

A wrapper keeps the original module as ``base_layer`` (frozen) and adds a learned *delta* whose
last layer is zero-initialised, so injecting a method changes no output at step 0. Wrappers can be
disabled (the delta is skipped), report their own parameters as an adapter-only state dict and,
when the delta is linear (LoRA), merge it into the base weights and unmerge it again.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from samtune.errors import ConfigurationError


class PeftWrapper(nn.Module):
    """Base class of every wrapper: ``output = base_layer(x) + delta`` unless disabled or merged.

    Subclasses implement :meth:`forward` using :attr:`active`, and :meth:`merge` / :meth:`unmerge`
    when their delta is linear in the input.
    """

    #: Whether :meth:`merge` is possible (a linear delta).
    mergeable: bool = False
    #: The wrapped original module (frozen).
    base_layer: Any

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__()
        self.base_layer = base_layer
        for parameter in base_layer.parameters():
            parameter.requires_grad_(False)
        self.disabled = False
        self.merged = False

    @property
    def active(self) -> bool:
        """Whether the delta must be added in ``forward`` (not disabled, not merged)."""
        return not self.disabled and not self.merged

    def adapter_parameters(self) -> Iterable[tuple[str, nn.Parameter]]:
        """The wrapper's own (trainable) parameters, excluding the base layer."""
        for name, parameter in self.named_parameters():
            if not name.startswith("base_layer."):
                yield name, parameter

    def merge(self) -> None:
        """Fold the delta into the base weights (exact for linear deltas)."""
        raise ConfigurationError(
            f"{type(self).__name__} cannot be merged: its delta is not linear. Keep it as a separate layer."
        )

    def unmerge(self) -> None:
        """Undo :meth:`merge`."""
        raise ConfigurationError(f"{type(self).__name__} cannot be merged or unmerged.")


@dataclass
class InjectionReport:
    """What an injection wrapped, per method.

    Attributes:
        method: Method name (``lora``, ``adapter``, ``conv_lora``...).
        wrapped: Dotted names of the wrapped modules, in model order.
        trainable_parameters: Number of parameters the method added.
    """

    method: str
    wrapped: list[str] = field(default_factory=list)
    trainable_parameters: int = 0

    def summary(self) -> str:
        """One line for logs and model cards."""
        return f"{self.method}: {len(self.wrapped)} modules wrapped, {self.trainable_parameters:,} parameters"


def matching_modules(model: nn.Module, patterns: Iterable[str]) -> list[tuple[str, nn.Module]]:
    """Modules whose dotted name matches any of the shell-style ``patterns`` (``*`` spans dots)."""
    patterns = list(patterns)
    return [
        (name, module) for name, module in model.named_modules() if any(fnmatch.fnmatchcase(name, p) for p in patterns)
    ]


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule at dotted ``name`` by ``new``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def inject(
    model: nn.Module,
    patterns: Iterable[str],
    make_wrapper: Callable[[str, nn.Module], nn.Module],
    *,
    method: str,
    what: str,
) -> InjectionReport:
    """Wrap every module matching ``patterns``.

    Args:
        model: Model to modify in place.
        patterns: Shell-style patterns of dotted module names.
        make_wrapper: ``(name, module) -> wrapper``.
        method: Method name for the report.
        what: What the patterns were meant to hit, for the error message.

    Raises:
        ConfigurationError: Nothing matched (a loud error, never a silent no-op).
    """
    patterns = list(patterns)
    targets = [(n, m) for n, m in matching_modules(model, patterns) if not isinstance(m, PeftWrapper)]
    if not targets:
        sample = [n for n, _ in model.named_modules()][:8]
        raise ConfigurationError(
            f"{method}: no module matched {patterns} ({what}). Module names look like {sample}; check the "
            "target blocks and that the backbone is the one the preset expects."
        )
    report = InjectionReport(method)
    for name, module in targets:
        wrapper = make_wrapper(name, module)
        replace_module(model, name, wrapper)
        report.wrapped.append(name)
        report.trainable_parameters += sum(
            p.numel() for n, p in wrapper.named_parameters() if not n.startswith("base_layer.")
        )
    return report


def peft_wrappers(model: nn.Module) -> list[tuple[str, PeftWrapper]]:
    """Every wrapper in ``model`` with its dotted name."""
    return [(name, module) for name, module in model.named_modules() if isinstance(module, PeftWrapper)]


def set_adapters_enabled(model: nn.Module, enabled: bool) -> None:
    """Switch every wrapper's delta on or off (the base model's behaviour when off)."""
    for _, wrapper in peft_wrappers(model):
        wrapper.disabled = not enabled


def merge_adapters(model: nn.Module) -> None:
    """Merge every mergeable wrapper into its base weights."""
    for _, wrapper in peft_wrappers(model):
        if wrapper.mergeable and not wrapper.merged:
            wrapper.merge()


def unmerge_adapters(model: nn.Module) -> None:
    """Undo :func:`merge_adapters`."""
    for _, wrapper in peft_wrappers(model):
        if wrapper.mergeable and wrapper.merged:
            wrapper.unmerge()


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the wrappers' own parameters, keyed by their full dotted names."""
    state: dict[str, torch.Tensor] = {}
    for name, wrapper in peft_wrappers(model):
        for pname, parameter in wrapper.adapter_parameters():
            state[f"{name}.{pname}"] = parameter.detach().clone()
    return state
