"""Prediction speed and memory of the default backbone (LiteMedSAM) on this machine.

Prints, as medians over repeated runs measured in this one process:
  * image-encoder time per 256x256 slice (batch 1 and batch 4, per slice);
  * mask-decoder time per slice (automatic mode);
  * whole-volume automatic prediction of an 88-slice 256x256 volume (end to end: normalisation,
    resizing, encoder, decoder, restore, reassembly);
  * peak resident memory of the process.

Usage:  python benchmarks/bench_prediction.py [--repeats 5] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time

import numpy as np
import torch

from samtune.data import Volume
from samtune.models import build_model
from samtune.predict import PredictConfig, predict_volume


def _median_seconds(fn, repeats: int, *, warmup: bool = True) -> float:
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024.0 if sys.platform != "darwin" else rss / (1024.0 * 1024.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per figure (median reported)")
    parser.add_argument("--volume-repeats", type=int, default=2, help="repeats of the whole-volume run")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    model = build_model("litemedsam", device="cpu")
    size = model.input_size
    figures: dict[str, float | str | int] = {
        "machine": f"{platform.processor() or platform.machine()}, {args.threads} threads",
        "torch": torch.__version__,
        "backbone": "litemedsam",
    }
    with torch.inference_mode():
        x1 = torch.randn(1, 3, size, size)
        x4 = torch.randn(4, 3, size, size)
        figures["encoder_s_per_slice_batch1"] = _median_seconds(lambda: model.encode(x1), args.repeats)
        figures["encoder_s_per_slice_batch4"] = _median_seconds(lambda: model.encode(x4), args.repeats) / 4
        embedding = model.encode(x1)
        figures["decoder_s_per_slice"] = _median_seconds(lambda: model.decode(embedding), args.repeats)

    rng = np.random.default_rng(0)
    volume = Volume.from_array(rng.normal(size=(88, 256, 256)).astype(np.float32), spacing=(0.625, 0.625, 0.625))
    config = PredictConfig(batch_size=4)
    figures["volume_88x256x256_automatic_s"] = _median_seconds(
        lambda: predict_volume(model, volume, config), args.volume_repeats, warmup=False
    )  # the model is already warm from the encoder figures
    figures["peak_rss_mb"] = _peak_rss_mb()

    width = max(len(k) for k in figures)
    for key, value in figures.items():
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        print(f"{key:<{width}}  {shown}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()
