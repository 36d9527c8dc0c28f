"""Helpers shared by the benchmark scripts: machine description, medians, la_heart_dev loading,
sparsely painted training cases, and encoding a volume once for many models."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from samtune.data import Volume, prepare_slices, read_label, read_volume
from samtune.data.pipeline import SliceConfig
from samtune.data.slicing import extract_slices
from samtune.models import SamModel
from samtune.train import TrainingCase

AXIS = "k"  # the 88-slice axis of the la_heart_dev volumes


def machine(threads: int | None = None, device: str = "cpu") -> dict[str, Any]:
    """What the figures were measured on."""
    model_name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": model_name or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "threads": threads if threads is not None else torch.get_num_threads(),
        "device": device,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def median_seconds(fn: Callable[[], object], repeats: int, *, warmup: bool = True) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls (after one untimed call when ``warmup``)."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB.

    On Linux this is ``VmHWM`` of ``/proc/self/status``: the high-water mark of this program's own
    memory. ``getrusage``'s ``ru_maxrss`` survives ``exec``, so a subprocess would report its parent's
    peak at the time of the fork whenever that was larger (seen in ``bench_scaling.py``).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024.0 if sys.platform != "darwin" else rss / (1024.0 * 1024.0)


def load_case(data: Path, case_id: str) -> tuple[Volume, Volume]:
    """Image and label of one la_heart_dev case (read in place, never copied)."""
    image = read_volume(data / "images" / f"{case_id}.nii.gz")
    return image, read_label(data / "labels" / f"{case_id}.nii.gz", reference=image)


def case_ids(data: Path) -> list[str]:
    return (data / "cases.txt").read_text(encoding="utf-8").split()


def painted_case(
    case_id: str, image: Volume, label: Volume, slices: int, *, marked_empty: int = 0
) -> tuple[TrainingCase, list[int]]:
    """A sparsely labelled case: ``slices`` evenly spaced slices with the atrium keep their label.

    ``marked_empty`` (0, 2 or 4) slices beyond the atrium are marked "structure absent", as a user
    marks them with one click each: 3 slices past each end (2), and 10 past each end too (4).
    """
    per_slice = extract_slices(label.array, 0)
    showing = [s for s in range(per_slice.shape[0]) if per_slice[s].any()]
    # Evenly spaced, away from the first and last slice that show the structure.
    chosen = sorted({showing[int(round(x))] for x in np.linspace(0, len(showing) - 1, slices + 2)[1:-1]})
    sparse = np.zeros_like(label.array)
    sparse[chosen] = label.array[chosen]
    offsets = (3, 10)[: marked_empty // 2]
    empty = sorted({s for d in offsets for s in (showing[0] - d, showing[-1] + d) if 0 <= s < per_slice.shape[0]})
    case = TrainingCase(
        case_id, image, Volume(sparse, label.geometry), structure="left atrium", value=1, empty_slices=empty
    )
    return case, chosen


def slice_key(image: torch.Tensor) -> str:
    """Identity of one prepared model input ``(3, S, S)``."""
    return hashlib.sha1(image.contiguous().numpy().tobytes()).hexdigest()


class MemoEncoder(nn.Module):
    """A frozen image encoder that returns precomputed embeddings for inputs it has seen.

    Models with a frozen encoder (decoder-only presets, BLO-SAM) trained on the same slices again
    and again would otherwise re-encode them in every run. Inputs not in the memo are encoded with
    ``encode`` and remembered. Embeddings are kept in float16, as the training cache keeps them.
    """

    def __init__(self, encode: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self._encode = encode
        self.memo: dict[str, torch.Tensor] = {}
        self.hits = 0
        self.misses = 0

    def add(self, images: torch.Tensor, embeddings: torch.Tensor) -> None:
        for image, embedding in zip(images, embeddings):
            self.memo[slice_key(image)] = embedding.to(torch.float16)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = []
        for image in images.detach().cpu():
            key = slice_key(image)
            if key in self.memo:
                self.hits += 1
            else:
                self.misses += 1
                self.memo[key] = self._encode(image[None])[0].to(torch.float16)
            out.append(self.memo[key])
        return torch.stack(out).float().to(images.device)


def encode_volume(
    image: Volume,
    model: SamModel,
    encode: Callable[[torch.Tensor], torch.Tensor],
    *,
    cache: Path | None = None,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Every slice of ``image`` along ``AXIS``: model inputs, float16 embeddings, seconds spent encoding.

    With ``cache`` (a file outside the repository) the embeddings are read from / written to it.
    """
    images, _ = prepare_slices(
        image, input_size=model.input_size, pixel_norm=model.pixel_norm, config=SliceConfig(AXIS)
    )
    if cache is not None and cache.is_file():
        return images, torch.load(cache, weights_only=True), 0.0
    started = time.perf_counter()
    with torch.no_grad():
        embeddings = torch.cat([encode(images[s : s + 1]).to(torch.float16) for s in range(images.shape[0])])
    seconds = time.perf_counter() - started
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_suffix(".partial")
        torch.save(embeddings, partial)
        partial.replace(cache)
    return images, embeddings, seconds


@torch.no_grad()
def masks_from_embeddings(model: SamModel, embeddings: torch.Tensor, grid: Any, batch: int = 8) -> np.ndarray:
    """Automatic-mode masks ``(N, h, w)`` on the slice grid, from precomputed (float16) embeddings."""
    model.eval()
    out = []
    for start in range(0, embeddings.shape[0], batch):
        low_res, _ = model.decode(embeddings[start : start + batch].float())
        out.append(grid.logits_to_masks(low_res.float()))
    return np.concatenate(out)


def write_results(path: str | Path | None, results: dict[str, Any]) -> None:
    """Write ``results`` as JSON to ``path`` (if given) atomically: the report never reads a half file."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    partial.replace(path)
