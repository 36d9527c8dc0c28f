"""Image-encoder runtimes for inference: PyTorch, or ONNX Runtime on the CPU (optional, same results).

The image encoder is almost all of prediction time on a CPU. ONNX Runtime runs the same encoder graph
in fp32, with outputs equal to PyTorch's within float32 rounding; on the 2-core development machine
it segmented an 88-slice MRI volume 1.05x faster than PyTorch, and a noise volume 1.5x faster, its
speed not varying with the input as PyTorch's did (``docs/benchmarks.md``). It is optional:
``runtime="auto"`` uses it when the ``onnxruntime`` and ``onnx`` packages are installed and the model
is on the CPU, and falls back to PyTorch otherwise (or when the export fails), saying why. ONNX
Runtime's telemetry (collected by its official Windows builds) is switched off before any session is
made: nothing about a user's work leaves their machine. (OpenVINO, measured equally fast, is not
used for that reason: ``import openvino`` sends a usage event to Intel unless the user opted out.)

The encoder is exported once (a few seconds) into the per-user cache folder as an ONNX file (a
protobuf graph with its weights; no pickled Python), under a fingerprint of the encoder's weights
and input size, and loaded from there later. A fine-tuned encoder (LoRA, adapters) has other weights
and so its own entry. Only the encoder is exported: the prompt encoder and mask decoder stay in
PyTorch. Tracing records one path through the code, so a fresh export is compared with PyTorch on a
random input and discarded if they differ, and encoders with Conv-LoRA layers (which route each
input to an expert) are never exported.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from samtune.errors import ConfigurationError
from samtune.models.registry import Runtime
from samtune.models.sam_model import SamModel
from samtune.paths import user_dir

logger = logging.getLogger(__name__)

#: Runtimes accepted by :func:`encoder_runtime` (``auto`` picks ONNX Runtime on a CPU when installed).
RUNTIMES = tuple(r.value for r in Runtime)


def runtime_cache_dir() -> Path:
    """Where exported encoders are kept: ``SAMTUNE_RUNTIME_CACHE`` or the per-user cache ``runtime``."""
    return user_dir("runtime", override_env="SAMTUNE_RUNTIME_CACHE", cache=True)


@dataclass
class EncoderRuntime:
    """A callable ``(B, 3, S, S) -> (B, C, He, We)`` image encoder for inference.

    Attributes:
        name: ``torch`` or ``onnxruntime``: what actually runs.
        reason: Why this runtime was chosen (e.g. why ONNX Runtime was not used).
        encode: The encoder function (no gradients).
    """

    name: str
    reason: str
    encode: Callable[[torch.Tensor], torch.Tensor]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode(images)


def encoder_fingerprint(model: SamModel) -> str:
    """SHA-256 over the image encoder's parameters and buffers (names, dtypes, shapes, values) and input size."""
    digest = hashlib.sha256(f"{model.name}:{model.input_size}".encode())
    for name, tensor in model.image_encoder.state_dict().items():
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)}".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def encoder_runtime(model: SamModel, runtime: str = "auto", *, cache_dir: str | Path | None = None) -> EncoderRuntime:
    """The image encoder of ``model`` in the requested runtime.

    Args:
        model: The model whose encoder is wanted (its current weights; call again after training).
        runtime: ``auto`` (ONNX Runtime on a CPU when installed, else PyTorch), ``torch`` or
            ``onnxruntime``. Tiny test configurations use PyTorch under ``auto``.
        cache_dir: Folder for exported encoders (default :func:`runtime_cache_dir`).

    Raises:
        ConfigurationError: An unknown runtime, or ``onnxruntime`` asked for explicitly but not
            usable (not installed, model not on the CPU, or the export failed).
    """
    runtime = str(runtime).lower()
    if runtime not in RUNTIMES:
        raise ConfigurationError(f"Unknown encoder runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}.")
    if runtime == "torch":
        return _torch_runtime(model, "PyTorch requested")
    problem = _onnxruntime_problem(model, explicit=runtime == "onnxruntime")
    if problem is None:
        try:
            return _onnxruntime(model, Path(cache_dir) if cache_dir is not None else runtime_cache_dir())
        except Exception as error:  # an unusual encoder can fail anywhere in the export or the session
            problem = f"the encoder could not be exported to ONNX Runtime ({type(error).__name__}: {error})"
    if runtime == "onnxruntime":
        raise ConfigurationError(f"The ONNX Runtime encoder is not usable: {problem}. Use runtime 'auto' or 'torch'.")
    logger.info("Image encoder runs in PyTorch: %s.", problem)
    return _torch_runtime(model, problem)


def _torch_runtime(model: SamModel, reason: str) -> EncoderRuntime:
    def encode(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model.encode(images)

    return EncoderRuntime("torch", reason, encode)


def _onnxruntime_problem(model: SamModel, *, explicit: bool) -> str | None:
    if model.tiny and not explicit:
        return "a tiny test configuration (exporting it would cost more than it saves)"
    if any(getattr(module, "routes_per_input", False) for module in model.image_encoder.modules()):
        return "its Conv-LoRA layers route each input to an expert, which a traced graph cannot follow"
    if model.device.type != "cpu":
        return f"the model is on {model.device.type}, and ONNX Runtime is used only for the CPU"
    try:
        import onnx  # noqa: F401  (the exporter writes the graph with it)
        import onnxruntime  # noqa: F401
    except ImportError as error:
        return f"the optional package '{error.name}' is not installed (pip install onnxruntime onnx)"
    return None


def _onnxruntime(model: SamModel, cache_dir: Path) -> EncoderRuntime:
    import onnxruntime as ort

    ort.disable_telemetry_events()
    folder = cache_dir / f"{model.name}-{encoder_fingerprint(model)[:32]}-onnx"
    path = folder / "encoder.onnx"
    if path.is_file():
        origin = f"ONNX Runtime, exported encoder loaded from {folder}"
    else:
        _export_atomically(model, folder)
        origin = f"ONNX Runtime, encoder exported to {folder}"
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    if "exported" in origin:  # a traced graph can silently differ (data-dependent code): check it once
        _check_export(model, session, name, folder)
    lock = threading.Lock()  # the predictor session also encodes from a prefetch thread; share the 2 cores

    def encode(images: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(images.detach().to("cpu", torch.float32).numpy())
        with lock:  # the graph is exported for one slice: batch 1 is fastest on a CPU
            outputs = [session.run(None, {name: item[None]})[0] for item in array]
        return torch.from_numpy(np.concatenate(outputs))

    return EncoderRuntime("onnxruntime", origin, encode)


def _check_export(model: SamModel, session: object, name: str, folder: Path) -> None:
    """Compare the exported encoder with PyTorch on one random input; remove the export if they differ."""
    example = torch.randn(1, 3, model.input_size, model.input_size, generator=torch.Generator().manual_seed(0))
    was_training = model.image_encoder.training
    model.image_encoder.eval()
    with torch.no_grad():
        expected = model.encode(example.to(model.device)).cpu()
    model.image_encoder.train(was_training)
    got = torch.from_numpy(session.run(None, {name: example.numpy()})[0])  # type: ignore[attr-defined]
    difference = float((got - expected).abs().max())
    tolerance = 1e-3 * max(1.0, float(expected.abs().max()))
    if got.shape != expected.shape or difference > tolerance:
        shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError(f"the exported encoder differs from PyTorch by {difference:.2e} (tolerance {tolerance:.1e})")


def _export_atomically(model: SamModel, folder: Path) -> None:
    """Export into a temporary sibling folder and rename it into place (never a half entry)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=folder.name + ".partial-", dir=folder.parent))
    encoder = model.image_encoder
    was_training = encoder.training
    encoder.eval()
    try:
        example = torch.zeros(1, 3, model.input_size, model.input_size)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracing warnings about constant shapes: the graph is fixed-size
            torch.onnx.export(
                encoder, (example,), str(partial / "encoder.onnx"), opset_version=17, dynamo=False,
                input_names=["images"], output_names=["embeddings"],
            )  # fmt: skip
        try:
            os.replace(partial, folder)
        except OSError:  # another process exported the same encoder first: keep theirs
            if not (folder / "encoder.onnx").is_file():
                raise
    finally:
        encoder.train(was_training)
        shutil.rmtree(partial, ignore_errors=True)
