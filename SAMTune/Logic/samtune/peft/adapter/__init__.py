"""Adapter (Houlsby / Med-SA layout): bottlenecks after attention and beside the MLP."""

from samtune.peft.adapter.config import AdapterConfig
from samtune.peft.adapter.inject import inject_adapters
from samtune.peft.adapter.layer import Bottleneck, ParallelAdapter, SerialAdapter

__all__ = ["AdapterConfig", "Bottleneck", "ParallelAdapter", "SerialAdapter", "inject_adapters"]
