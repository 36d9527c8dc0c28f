"""Interactive click latency with a predictor session (the Segment Editor effect's prompted mode).

Measured on one 256x256 phantom volume with the real bundled LiteMedSAM (or ``--backbone``):

* **new slice**: the first click on a slice (image encoder + prompt encoder + mask decoder);
* **cached slice**: a further click on a slice whose embedding is cached (prompt encoder + decoder);
* **propagation**: seconds per slice when a box-prompted mask is carried to the neighbouring slices.

Medians over repeated clicks, in one run; the ratio new/cached is measured in the same run.

    .venv/bin/python benchmarks/bench_interactive.py --json benchmarks/results/interactive_cpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from common import machine, write_results

from samtune.data import make_phantom
from samtune.models import build_model
from samtune.predict import SlicePrompt, boxes_from_label
from samtune.predict.session import PredictorSession


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="litemedsam")
    parser.add_argument("--slices", type=int, default=6, help="new slices to click on")
    parser.add_argument("--clicks", type=int, default=20, help="clicks on a cached slice")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runtime", default="auto", help="image-encoder runtime (auto, torch, onnxruntime)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    image, label = make_phantom(shape=(16, 256, 256), seed=4)
    model = build_model(args.backbone, device=args.device)
    session = PredictorSession(model, image, axis="k", runtime=args.runtime, store=False)
    present = np.flatnonzero(label.array.reshape(16, -1).any(axis=1))
    middle = int(present.mean())
    point = np.argwhere(label.array[middle] > 0).mean(axis=0)[::-1]  # (x, y)

    def click(index: int) -> float:
        start = time.perf_counter()
        session.predict_slice(index, SlicePrompt(points=[point], point_labels=[1]))
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    click(middle)  # warm-up (first call allocates)
    new = [click(int(s)) for s in present[: args.slices] if s != middle]
    cached = [click(middle) for _ in range(args.clicks)]
    seed = session.predict_slice(middle, SlicePrompt(boxes=boxes_from_label(label.array, axis=0)[middle].boxes))
    session.close()
    session = PredictorSession(model, image, axis="k", runtime=args.runtime, store=False)
    session.embedding(middle)
    start = time.perf_counter()
    reached = session.propagate(middle, seed, direction=1, prefetch=0)
    propagation = (time.perf_counter() - start) / max(1, len(reached))
    result = {
        "machine": machine(torch.get_num_threads(), args.device),
        "device": args.device,
        "runtime": session.runtime.name,
        "backbone": args.backbone,
        "new_slice_click_s": statistics.median(new),
        "cached_slice_click_s": statistics.median(cached),
        "ratio_new_over_cached": statistics.median(new) / statistics.median(cached),
        "propagation_s_per_slice": propagation,
        "propagated_slices": len(reached),
        "n_new": len(new),
        "n_cached": len(cached),
    }
    print(json.dumps(result, indent=2))
    write_results(args.json, result)


if __name__ == "__main__":
    main()
