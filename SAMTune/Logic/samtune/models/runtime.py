"""Image-encoder runtimes for inference: PyTorch, or ONNX Runtime on the CPU (optional, same results).

The image encoder is almost all of prediction time on a CPU. ONNX Runtime runs the same encoder graph
in fp32, with outputs equal to PyTorch's within float32 rounding; on the 2-core development machine
it segmented an 88-slice MRI volume 1.05x faster than PyTorch, and a noise volume 1.5x faster, its
speed not varying with the input as PyTorch's did (``docs/benchmarks.md``). It is optional:
``runtime="auto"`` uses it when the ``onnxruntime`` and ``onnx`` packages are installed and the model
is on the CPU, and falls back to PyTorch otherwise (or when the export fails), saying why. ONNX
Runtime's telemetry is switched off before it is first imported (:func:`samtune.privacy.onnxruntime_module`): nothing
about a user's machine or work leaves it. (OpenVINO, measured equally fast, is not
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
from typing import Any

import numpy as np
import torch

from samtune.errors import ConfigurationError
from samtune.models.embedding_store import EmbeddingStore, stored_encoder
from samtune.models.registry import Runtime
from samtune.models.sam_model import SamModel
from samtune.paths import user_dir
from samtune.privacy import onnxruntime_module

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
        fingerprint: :func:`encoder_fingerprint` of the encoder, when it was computed.
    """

    name: str
    reason: str
    encode: Callable[[torch.Tensor], torch.Tensor]
    fingerprint: str | None = None

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


def stored_runtime_encoder(
    model: SamModel, runtime: EncoderRuntime, store: EmbeddingStore | bool
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``runtime``'s encoder backed by an embedding store (:func:`~samtune.models.embedding_store.stored_encoder`)."""
    return stored_encoder(runtime.encode, lambda: runtime.fingerprint or encoder_fingerprint(model), store)


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

        onnxruntime_module()
    except ImportError as error:
        return f"the optional package '{error.name}' is not installed (pip install onnxruntime onnx)"
    return None


#: Whether ONNX Runtime's threads spin for more work after a run (its default). Off: see :func:`_sessions`;
#: ``benchmarks/bench_decoder.py`` turns it on to measure the difference.
SPIN_BETWEEN_RUNS = False


def _onnxruntime(model: SamModel, cache_dir: Path) -> EncoderRuntime:
    fingerprint = encoder_fingerprint(model)
    example = torch.randn(1, 3, model.input_size, model.input_size, generator=torch.Generator().manual_seed(0))
    graph = _Graph("encoder.onnx", model.image_encoder, (example,), ("images",), ("embeddings",))
    folder = cache_dir / f"{model.name}-{fingerprint[:32]}-onnx"
    (session,), origin = _sessions(model.image_encoder, folder, [graph], what="encoder")
    name = session.get_inputs()[0].name
    lock = threading.Lock()  # the predictor session also encodes from a prefetch thread; share the 2 cores

    def encode(images: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(images.detach().to("cpu", torch.float32).numpy())
        with lock:  # the graph is exported for one slice: batch 1 is fastest on a CPU
            outputs = [session.run(None, {name: item[None]})[0] for item in array]
        return torch.from_numpy(np.concatenate(outputs))

    return EncoderRuntime("onnxruntime", origin, encode, fingerprint)


# -- the mask decoder ---------------------------------------------------------------------------
#: ``decode(embeddings (B, C, He, We), boxes (B, 4) or None) -> (low-res logits (B, 1, Hl, Wl), scores (B, 1))``
DecodeFunction = Callable[[torch.Tensor, "torch.Tensor | None"], "tuple[torch.Tensor, torch.Tensor]"]


@dataclass
class DecoderRuntime:
    """The prompt encoder and mask decoder for automatic decoding: no prompt, or one box per slice.

    Attributes:
        name: ``torch`` or ``onnxruntime``: what actually runs.
        reason: Why this runtime was chosen.
        decode: See :data:`DecodeFunction` (SAM's single-mask output).
        refine: The decoder of automatic mode's refinement passes: the model's pretrained decoder
            (:attr:`SamModel.box_decoder`) in the same runtime when it kept one, else ``None``
            (refinement runs ``decode``).
    """

    name: str
    reason: str
    decode: DecodeFunction
    refine: DecodeFunction | None = None

    def __call__(
        self, embeddings: torch.Tensor, boxes: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decode(embeddings, boxes)


def decoder_fingerprint(model: SamModel) -> str:
    """SHA-256 over everything but the image encoder (prompt encoder, mask decoder, learned prompt)."""
    digest = hashlib.sha256(f"decoder:{model.name}:{model.input_size}".encode())
    for name, tensor in model.state_dict().items():
        if name.startswith("image_encoder."):
            continue
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)}".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def decoder_runtime(model: SamModel, runtime: str = "auto", *, cache_dir: str | Path | None = None) -> DecoderRuntime:
    """The automatic-mode decoder of ``model`` in the requested runtime (see :func:`encoder_runtime`).

    ONNX Runtime ran LiteMedSAM's mask decoder 1.9x faster than PyTorch on the 2-core development
    machine (45 vs 85 ms per slice), which is most of a whole-volume prediction whose embeddings are
    stored. Two graphs are exported (no prompt; one box), checked against PyTorch once, and cached
    under the fingerprint of the decoder's weights (:func:`decoder_fingerprint`). A model that kept
    its pretrained decoder (:attr:`SamModel.box_decoder`) gets that decoder too, as ``refine``.
    """
    main = _decoder_runtime(model, runtime, cache_dir)
    if model.box_decoder is not None:
        main.refine = _decoder_runtime(model.box_decoder, runtime, cache_dir).decode
    return main


def _decoder_runtime(model: SamModel, runtime: str, cache_dir: str | Path | None) -> DecoderRuntime:
    runtime = str(runtime).lower()
    if runtime not in RUNTIMES:
        raise ConfigurationError(f"Unknown decoder runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}.")

    def torch_decode(embeddings: torch.Tensor, boxes: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        return model.decode(embeddings, boxes=boxes)

    if runtime == "torch":
        return DecoderRuntime("torch", "PyTorch requested", torch_decode)
    problem = _onnxruntime_problem(model, explicit=runtime == "onnxruntime")
    if problem is None:
        try:
            root = Path(cache_dir) if cache_dir is not None else runtime_cache_dir()
            return _onnx_decoder(model, root, torch_decode)
        except Exception as error:  # an unusual decoder can fail anywhere in the export or the session
            problem = f"the decoder could not be exported to ONNX Runtime ({type(error).__name__}: {error})"
    if runtime == "onnxruntime":
        raise ConfigurationError(f"The ONNX Runtime decoder is not usable: {problem}. Use runtime 'auto' or 'torch'.")
    logger.info("Mask decoder runs in PyTorch: %s.", problem)
    return DecoderRuntime("torch", problem, torch_decode)


class _AutomaticDecoder(torch.nn.Module):
    def __init__(self, model: SamModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.decode(embeddings)


class _BoxDecoder(_AutomaticDecoder):
    def forward(self, embeddings: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        return self.model.decode(embeddings, boxes=boxes)


def _onnx_decoder(model: SamModel, cache_dir: Path, fallback: DecodeFunction) -> DecoderRuntime:
    prompt_encoder: Any = model.prompt_encoder
    shape = (1, int(prompt_encoder.embed_dim), *(int(n) for n in prompt_encoder.image_embedding_size))
    embedding = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    box = torch.tensor([[0.2, 0.25, 0.7, 0.8]]) * model.input_size
    graphs = [
        _Graph("automatic.onnx", _AutomaticDecoder(model), (embedding,), ("embeddings",), ("logits", "scores")),
        _Graph("box.onnx", _BoxDecoder(model), (embedding, box), ("embeddings", "boxes"), ("logits", "scores")),
    ]
    folder = cache_dir / f"{model.name}-{decoder_fingerprint(model)[:32]}-onnx-decoder"
    (automatic, boxed), origin = _sessions(model, folder, graphs, what="decoder")
    lock = threading.Lock()

    def decode(embeddings: torch.Tensor, boxes: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if embeddings.device.type != "cpu":
            return fallback(embeddings, boxes)
        array = np.ascontiguousarray(embeddings.detach().to(torch.float32).numpy())
        box_array = None if boxes is None else np.ascontiguousarray(boxes.detach().to("cpu", torch.float32).numpy())
        logits, scores = [], []
        with lock:  # exported for one slice (one box): batch 1
            for n, item in enumerate(array):
                if box_array is None:
                    out = automatic.run(None, {"embeddings": item[None]})
                else:
                    out = boxed.run(None, {"embeddings": item[None], "boxes": box_array[n : n + 1]})
                logits.append(out[0])
                scores.append(out[1])
        return torch.from_numpy(np.concatenate(logits)), torch.from_numpy(np.concatenate(scores))

    return DecoderRuntime("onnxruntime", origin, decode)


# -- export, check and load ---------------------------------------------------------------------
@dataclass
class _Graph:
    """One module to export: file name, module, example inputs, input and output names."""

    file: str
    module: torch.nn.Module
    example: tuple[torch.Tensor, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def _sessions(owner: torch.nn.Module, folder: Path, graphs: list[_Graph], *, what: str) -> tuple[list[Any], str]:
    """ONNX Runtime sessions of ``graphs``: loaded from ``folder``, or exported into it and checked once."""
    ort = onnxruntime_module()
    exported = not all((folder / graph.file).is_file() for graph in graphs)
    was_training = owner.training
    owner.eval()
    try:
        if exported:
            _export_atomically(folder, graphs)
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # After a run, ONNX Runtime's threads spin for more work by default. A prediction alternates
        # sessions (encoder, the fine-tuned decoder, the pretrained decoder of the refinement) and
        # PyTorch between them, so one session's spinning threads took the cores from the next: on
        # the 2 cores, one automatic and two box decoder passes took 133-153 ms with spinning, 77-91 ms
        # without (benchmarks/bench_decoder.py, docs/benchmarks.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if SPIN_BETWEEN_RUNS else "0")
        sessions = [
            ort.InferenceSession(str(folder / graph.file), options, providers=["CPUExecutionProvider"])
            for graph in graphs
        ]
        if exported:  # a traced graph can silently differ (data-dependent code): check it once
            for graph, session in zip(graphs, sessions):
                _check_export(graph, session, folder)
    finally:
        owner.train(was_training)
    verb = "exported to" if exported else "loaded from"
    return sessions, f"ONNX Runtime, {what} {verb} {folder}"


def _check_export(graph: _Graph, session: Any, folder: Path) -> None:
    """Compare an exported graph with PyTorch on its example input; remove the export if they differ."""
    with torch.no_grad():
        expected = graph.module(*graph.example)
    expected = expected if isinstance(expected, tuple) else (expected,)
    feeds = {name: tensor.detach().cpu().numpy() for name, tensor in zip(graph.inputs, graph.example)}
    for want, got_array in zip(expected, session.run(None, feeds)):
        got = torch.from_numpy(got_array)
        want = want.detach().cpu().float()
        difference = float((got - want).abs().max()) if got.shape == want.shape else float("inf")
        tolerance = 1e-3 * max(1.0, float(want.abs().max()))
        if difference > tolerance:
            shutil.rmtree(folder, ignore_errors=True)
            raise RuntimeError(
                f"the exported {graph.file} differs from PyTorch by {difference:.2e} (tolerance {tolerance:.1e})"
            )


def _export_atomically(folder: Path, graphs: list[_Graph]) -> None:
    """Export into a temporary sibling folder and rename it into place (never a half entry)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=folder.name + ".partial-", dir=folder.parent))
    try:
        for graph in graphs:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracing warnings about constant shapes: the graph is fixed-size
                torch.onnx.export(
                    graph.module, graph.example, str(partial / graph.file), opset_version=17, dynamo=False,
                    input_names=list(graph.inputs), output_names=list(graph.outputs),
                )  # fmt: skip
        try:
            os.replace(partial, folder)
        except OSError:  # another process exported the same graphs first: keep theirs
            if not all((folder / graph.file).is_file() for graph in graphs):
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
