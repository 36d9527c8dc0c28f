"""ONNX graphs for ONNX Runtime: export once, check against PyTorch, load, and int8 copies.

A graph is exported into a folder of the per-user cache atomically (a temporary sibling folder renamed
into place: never a half entry) and compared with PyTorch once, since tracing records one path
through the code; a graph that differs is removed.

**int8 copies.** ONNX Runtime's dynamic quantisation stores the weights of a graph's matrix products
as int8 (one scale per output channel) and quantises their inputs on the fly, so it needs no
calibration data. A copy is written beside its fp32 graph (atomically, once) and used only after
it agreed with the fp32 graph on the example input (:func:`check_int8`); otherwise the fp32 graph
runs and the reason is said. Used for the mask decoder (``docs/benchmarks.md`` has its speed and
the Dice change it makes); int8 image encoders did not pay (slower, or Dice moved beyond 0.005).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from samtune.atomic import atomic_write_text
from samtune.privacy import onnxruntime_module, onnxruntime_quantization

logger = logging.getLogger(__name__)

#: Whether ONNX Runtime's threads spin for more work after a run (its default). Off: see :func:`session_options`;
#: ``benchmarks/bench_decoder.py`` turns it on to measure the difference.
SPIN_BETWEEN_RUNS = False


#: How far an int8 graph's mask logits may lie from the fp32 graph's on the check input (L2 norm of the
#: difference over that of the fp32 logits), and the largest difference of the presence logit. A sanity
#: check that the quantised graph computes the same function (LiteMedSAM's decoder: 1.4 %; tiny test
#: decoders: 0.7-2.4 %); what users see, the Dice change, is measured in ``benchmarks/bench_volume_speed.py``.
MAX_RELATIVE_ERROR = 0.05
MAX_SCORE_DIFFERENCE = 0.25


@dataclass
class Graph:
    """One module to export: file name, module, example inputs, input and output names."""

    file: str
    module: torch.nn.Module
    example: tuple[torch.Tensor, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def load_sessions(owner: torch.nn.Module, folder: Path, graphs: list[Graph], *, what: str) -> tuple[list[Any], str]:
    """ONNX Runtime sessions of ``graphs``: loaded from ``folder``, or exported into it and checked once."""
    ort = onnxruntime_module()
    exported = not all((folder / graph.file).is_file() for graph in graphs)
    was_training = owner.training
    owner.eval()
    try:
        if exported:
            _export_atomically(folder, graphs)
        options = session_options()
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


def session_options() -> Any:
    ort = onnxruntime_module()
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
    return options


def _check_export(graph: Graph, session: Any, folder: Path) -> None:
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


def _export_atomically(folder: Path, graphs: list[Graph]) -> None:
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


# -- int8 copies -------------------------------------------------------------------------------
def int8_path(source: Path) -> Path:
    """Where the int8 copy of ``source`` is kept: ``name.int8.onnx`` beside it."""
    return source.with_name(f"{source.stem}.int8.onnx")


def rejected_path(source: Path) -> Path:
    """Where the reason the int8 copy of ``source`` failed its check is kept (so it is not made again)."""
    return source.with_name(f"{source.stem}.int8-rejected.txt")


def int8_copy(source: Path, check: Callable[[Path], str | None]) -> Path:
    """The int8 copy of the ONNX graph ``source``: made once, and kept only when ``check`` passes.

    ``check(path)`` says why the freshly quantised graph at ``path`` may not be used (``None``: it
    may). The copy is quantised under a temporary name and renamed into place only once it passed,
    so an existing copy has passed; a failed check is recorded (:func:`rejected_path`) and raised.

    Raises:
        RuntimeError: The check failed, now or when the copy was first made.
    """
    target, rejected = int8_path(source), rejected_path(source)
    if target.is_file():
        return target
    if rejected.is_file():
        raise RuntimeError(rejected.read_text(encoding="utf-8"))
    quantization = onnxruntime_quantization()

    handle, name = tempfile.mkstemp(prefix=target.stem + ".partial-", suffix=".onnx", dir=source.parent)
    os.close(handle)
    partial = Path(name)
    quiet = _DropRecords("Please consider to run pre-processing")  # advice for static quantisation, to the root log
    logging.getLogger().addFilter(quiet)
    try:
        try:
            quantization.quantize_dynamic(source, partial, op_types_to_quantize=["MatMul"], per_channel=True,
                                          weight_type=quantization.QuantType.QInt8)  # fmt: skip
        finally:
            logging.getLogger().removeFilter(quiet)
        problem = check(partial)
        if problem is not None:
            message = f"the int8 copy of {source.name} failed its check: {problem}"
            atomic_write_text(rejected, message)
            raise RuntimeError(message)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def check_int8(fp32: Any, int8: Any, feeds: dict[str, np.ndarray]) -> str | None:
    """Why the int8 session ``int8`` may not stand in for ``fp32`` on ``feeds`` (``None``: it may).

    Both sessions output ``(logits, scores)``; the mask logits must lie within :data:`MAX_RELATIVE_ERROR`
    of fp32's and the presence logits within :data:`MAX_SCORE_DIFFERENCE`.
    """
    want_logits, want_scores = fp32.run(None, feeds)[:2]
    got_logits, got_scores = int8.run(None, feeds)[:2]
    error = float(np.linalg.norm(got_logits - want_logits) / max(float(np.linalg.norm(want_logits)), 1e-12))
    score_difference = float(np.abs(want_scores - got_scores).max())
    if not (error <= MAX_RELATIVE_ERROR and score_difference <= MAX_SCORE_DIFFERENCE):  # NaN fails too
        return (
            f"its mask logits differed from fp32 by {error:.1%} (at most {MAX_RELATIVE_ERROR:.0%}) and its "
            f"presence logit by {score_difference:.3f} (at most {MAX_SCORE_DIFFERENCE})"
        )
    return None


def int8_sessions(folder: Path, graphs: list[Graph], fp32: list[Any], origin: str) -> tuple[list[Any], str, str]:
    """Sessions of the int8 copies of ``graphs`` (checked against their ``fp32`` sessions when made),
    the origin and the precision; ``fp32``, its origin with the reason, and ``fp32`` when a copy is unusable."""
    ort = onnxruntime_module()

    def load(path: Path) -> Any:
        return ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])

    try:
        sessions = []
        for graph, reference in zip(graphs, fp32):
            feeds = {name: tensor.detach().cpu().numpy() for name, tensor in zip(graph.inputs, graph.example)}

            def check(path: Path, reference: Any = reference, feeds: dict[str, np.ndarray] = feeds) -> str | None:
                return check_int8(reference, load(path), feeds)

            copy = int8_copy(folder / graph.file, check)
            sessions.append(load(copy))
    except Exception as error:  # the quantisation tools can fail on an unusual graph: fp32 still works
        logger.info("Mask decoder stays in fp32: %s.", error)
        return fp32, f"{origin}; fp32, as {error}", "fp32"
    return sessions, f"{origin}; int8 copies (dynamic quantisation)", "int8"


class _DropRecords(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


__all__ = [
    "MAX_SCORE_DIFFERENCE",
    "MAX_RELATIVE_ERROR",
    "SPIN_BETWEEN_RUNS",
    "Graph",
    "check_int8",
    "int8_copy",
    "int8_path",
    "int8_sessions",
    "rejected_path",
    "load_sessions",
    "session_options",
]
