"""Nothing about a user's machine or work leaves it: third-party telemetry is switched off here.

Standard library only (the worker's launcher in Slicer imports it before torch is installed).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

logger = logging.getLogger(__name__)

#: Set before ``onnxruntime`` is first imported: its telemetry client then never starts. The worker
#: is started with it too (:data:`samtune.worker.client.WORKER_ENV`).
TELEMETRY_OFF = {"ORT_DISABLE_TELEMETRY": "1"}


def onnxruntime_module() -> Any:
    """``onnxruntime``, imported with its telemetry off. Every SAMTune import of it goes through here.

    The Linux wheel of onnxruntime 1.32.0 carries Microsoft's 1DS telemetry client: importing the
    package records a "ProcessInfo" event (a device ID kept on disk, the CPU model, the operating
    system, the memory, container details) under ``~/.cache/Microsoft/DeveloperTools/.onnxruntime``
    for upload to ``mobile.events.data.microsoft.com``, and ``disable_telemetry_events()`` does not
    stop it; ``ORT_DISABLE_TELEMETRY=1`` in the environment before the import does (nothing is
    written). If other code in the process (another Slicer extension) imported it first, it is too
    late to switch it off here, and a warning says so.
    """
    if "onnxruntime" in sys.modules and any(os.environ.get(k) != v for k, v in TELEMETRY_OFF.items()):
        logger.warning(
            "onnxruntime was imported before SAMTune could switch its telemetry off, so it may send Microsoft "
            "a usage event from this process. Set the environment variable ORT_DISABLE_TELEMETRY=1 before "
            "starting the application to prevent it."
        )
    os.environ.update(TELEMETRY_OFF)
    import onnxruntime as ort

    ort.disable_telemetry_events()
    return ort


def onnxruntime_quantization() -> Any:
    """``onnxruntime.quantization`` (int8 copies of graphs), imported after :func:`onnxruntime_module`."""
    onnxruntime_module()
    from onnxruntime import quantization

    return quantization


__all__ = ["TELEMETRY_OFF", "onnxruntime_module", "onnxruntime_quantization"]
