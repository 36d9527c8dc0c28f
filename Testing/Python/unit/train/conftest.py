"""Fixtures of the trainer tests."""

from __future__ import annotations

import pytest
import torch
from phantom_task import pretrain_other_structure


@pytest.fixture(scope="session")
def pretrained() -> dict[str, torch.Tensor]:
    """A tiny base pretrained on phantom structure 2 (see :mod:`phantom_task`)."""
    return pretrain_other_structure()
