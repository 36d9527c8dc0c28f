"""Shared pytest configuration for the SAMTune suite."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch

# Real Qt, offscreen: the suite never needs a display.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

# Exported encoders (samtune.models.runtime) go to a per-run folder, never the user's cache.
if "SAMTUNE_RUNTIME_CACHE" not in os.environ:
    os.environ["SAMTUNE_RUNTIME_CACHE"] = tempfile.mkdtemp(prefix="samtune-test-runtime-")

# The on-disk embedding store is off unless a test turns it on with its own folder: a store shared
# across tests would serve one test's embeddings to another and hide the encoder calls they count.
os.environ["SAMTUNE_EMBEDDING_STORE_MB"] = "0"

# Deterministic, reproducible CPU runs; two threads match the CI machine.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect ``gpu`` tests when no CUDA device is present (they are selected, never hidden)."""
    if torch.cuda.is_available():
        return
    selected, deselected = [], []
    for item in items:
        (deselected if item.get_closest_marker("gpu") else selected).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected
