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
and so its own entry. Tracing records one path through the code, so a fresh export is compared with
PyTorch on a random input and discarded if they differ, and encoders with Conv-LoRA layers (which
route each input to an expert) are never exported.

Automatic mode's mask decoder is exported the same way (:func:`decoder_runtime`): once image
embeddings are stored (:mod:`samtune.models.embedding_store`) it is most of a prediction's time. It
can run as an int8 copy (``precision="int8"``, :mod:`samtune.models.onnx_graphs`); the encoder
always runs in fp32.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from samtune.errors import ConfigurationError
from samtune.models.embedding_store import EmbeddingStore, stored_encoder
from samtune.models.onnx_graphs import Graph, int8_sessions, load_sessions
from samtune.models.registry import Precision, Runtime
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


def _onnxruntime(model: SamModel, cache_dir: Path) -> EncoderRuntime:
    fingerprint = encoder_fingerprint(model)
    example = torch.randn(1, 3, model.input_size, model.input_size, generator=torch.Generator().manual_seed(0))
    folder = cache_dir / f"{model.name}-{fingerprint[:32]}-onnx"
    # A merged copy only to export: loading a cached graph needs no module beyond the model's own.
    encoder = model.image_encoder if (folder / "encoder.onnx").is_file() else _merged(model.image_encoder)
    graph = Graph("encoder.onnx", encoder, (example,), ("images",), ("embeddings",))
    (session,), origin = load_sessions(encoder, folder, [graph], what="encoder")
    name = session.get_inputs()[0].name
    lock = threading.Lock()  # the predictor session also encodes from a prefetch thread; share the 2 cores

    def encode(images: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(images.detach().to("cpu", torch.float32).numpy())
        with lock:  # the graph is exported for one slice: batch 1 is fastest on a CPU
            outputs = [session.run(None, {name: item[None]})[0] for item in array]
        return torch.from_numpy(np.concatenate(outputs))

    return EncoderRuntime("onnxruntime", origin, encode, fingerprint)


def _merged(module: torch.nn.Module) -> torch.nn.Module:
    """``module``, or for export a copy with its linear adapters (LoRA) merged into their base weights.

    Same outputs within float rounding, one matrix product per layer instead of three, and a graph
    the exporter can write: on the unmerged LoRA encoder (the fused-qkv delta scattered with
    ``index_add``) the ONNX exporter failed an internal shape assertion, so such a model encoded in PyTorch.
    """

    def unmerged(owner: torch.nn.Module) -> list[Any]:  # duck-typed: the models layer does not import peft
        return [m for m in owner.modules() if getattr(m, "mergeable", False) and not getattr(m, "merged", True)]

    if not unmerged(module):
        return module
    merged = copy.deepcopy(module)
    for wrapper in unmerged(merged):
        wrapper.merge()
    return merged


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
        precision: ``fp32``, or ``int8`` when an int8 copy of the ONNX graphs runs
            (:mod:`samtune.models.onnx_graphs`).
    """

    name: str
    reason: str
    decode: DecodeFunction
    refine: DecodeFunction | None = None
    precision: str = "fp32"

    @property
    def summary(self) -> str:
        """What runs, for logs and job records: e.g. ``onnxruntime int8``."""
        return f"{self.name} {self.precision}"

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


def decoder_runtime(
    model: SamModel, runtime: str = "auto", *, cache_dir: str | Path | None = None, precision: str = "fp32"
) -> DecoderRuntime:
    """The automatic-mode decoder of ``model`` in the requested runtime (see :func:`encoder_runtime`).

    ONNX Runtime ran LiteMedSAM's mask decoder 1.9x faster than PyTorch on the 2-core development
    machine (45 vs 85 ms per slice), which is most of a whole-volume prediction whose embeddings are
    stored. Two graphs are exported (no prompt; one box), checked against PyTorch once, and cached
    under the fingerprint of the decoder's weights (:func:`decoder_fingerprint`). A model that kept
    its pretrained decoder (:attr:`SamModel.box_decoder`) gets that decoder too, as ``refine``.
    ``precision="int8"`` runs int8 copies of the ONNX graphs (:mod:`samtune.models.onnx_graphs`) when
    they pass their check against fp32, else fp32 (``reason`` says why); PyTorch runs fp32.
    """
    precision = str(Precision.parse(precision, what="decoder precision"))
    main = _decoder_runtime(model, runtime, cache_dir, precision)
    if model.box_decoder is not None:
        reference = _decoder_runtime(model.box_decoder, runtime, cache_dir, main.precision)
        main.refine = reference.decode
        if reference.precision != main.precision:  # one precision for both, so the record is true
            main = _decoder_runtime(model, runtime, cache_dir, "fp32")
            main.refine = _decoder_runtime(model.box_decoder, runtime, cache_dir, "fp32").decode
            main.reason += f"; int8 not used: the pretrained decoder's {reference.reason}"
    return main


def _decoder_runtime(model: SamModel, runtime: str, cache_dir: str | Path | None, precision: str) -> DecoderRuntime:
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
            return _onnx_decoder(model, root, torch_decode, precision)
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


def _onnx_decoder(model: SamModel, cache_dir: Path, fallback: DecodeFunction, precision: str) -> DecoderRuntime:
    prompt_encoder: Any = model.prompt_encoder
    shape = (1, int(prompt_encoder.embed_dim), *(int(n) for n in prompt_encoder.image_embedding_size))
    embedding = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    box = torch.tensor([[0.2, 0.25, 0.7, 0.8]]) * model.input_size
    graphs = [
        Graph("automatic.onnx", _AutomaticDecoder(model), (embedding,), ("embeddings",), ("logits", "scores")),
        Graph("box.onnx", _BoxDecoder(model), (embedding, box), ("embeddings", "boxes"), ("logits", "scores")),
    ]
    folder = cache_dir / f"{model.name}-{decoder_fingerprint(model)[:32]}-onnx-decoder"
    (automatic, boxed), origin = load_sessions(model, folder, graphs, what="decoder")
    if precision == "int8":
        (automatic, boxed), origin, precision = int8_sessions(folder, graphs, [automatic, boxed], origin)
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

    return DecoderRuntime("onnxruntime", origin, decode, precision=precision)
