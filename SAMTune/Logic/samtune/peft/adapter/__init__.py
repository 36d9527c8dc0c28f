"""Adapter (Houlsby / Med-SA layout): bottlenecks after attention and beside the MLP."""

from typing import TYPE_CHECKING

from samtune._lazy import lazy_exports

if TYPE_CHECKING:
    from samtune.peft.adapter.inject import inject_adapters
    from samtune.peft.adapter.layer import Bottleneck, ParallelAdapter, SerialAdapter
    from samtune.peft.config import AdapterConfig

__getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)
