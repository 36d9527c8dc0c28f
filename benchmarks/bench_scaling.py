"""How prediction and training cost grow with the volume: time and peak memory vs slices and in-plane size.

Each point runs in its own subprocess (so its peak resident memory is its own), one after another:

* **prediction**: pretrained LiteMedSAM, automatic mode, every slice encoded (no embedding store,
  no slice search), on MR phantoms of 22, 44, 88 and 176 slices of 256 x 256, and of 44 slices of
  128 x 128 and 512 x 512;
* **training**: the ``cpu_quick`` preset for one epoch on one fully labelled phantom of 22, 44, 88
  and 176 slices of 256 x 256 (embedding cache built, then the steps; no embedding store).

The encoder is exported to ONNX Runtime once before the first point, so no point pays for it. The
phantoms are made and written (NIfTI) by the parent process, and each point reads its own, as a user's
run reads a file: so a point's peak memory is the run's, not the phantom maker's.

    .venv/bin/python benchmarks/bench_scaling.py --json benchmarks/results/scaling.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SLICES = (22, 44, 88, 176)
IN_PLANE = (128, 256, 512)


def phantom_files(folder: Path, slices: int, side: int) -> tuple[Path, Path]:
    """The phantom of a point as two NIfTI files in ``folder`` (made once per shape)."""
    from samtune.data import make_phantom, write_label, write_volume

    image, label = folder / f"image_{slices}_{side}.nii.gz", folder / f"label_{slices}_{side}.nii.gz"
    if not image.exists():
        volume, labels = make_phantom(shape=(slices, side, side), spacing=(1.0, 1.0, 2.5), seed=slices)
        write_volume(volume, image)
        write_label(labels, label)
    return image, label


def point(task: str, slices: int, side: int, threads: int, folder: Path) -> dict[str, Any]:
    """Run one point in this process (the subprocess's side) and return its figures."""
    import torch
    from common import peak_rss_mb

    from samtune.data import read_label, read_volume
    from samtune.data.pipeline import SliceConfig
    from samtune.models import build_model
    from samtune.predict import PredictConfig, predict_volume
    from samtune.train import TrainingCase, fine_tune, load_preset

    torch.set_num_threads(threads)
    image_file, label_file = phantom_files(folder, slices, side)
    image = read_volume(image_file)
    label = read_label(label_file, reference=image)
    baseline = peak_rss_mb()
    started = time.perf_counter()
    if task == "predict":
        model = build_model("litemedsam", device="cpu")
        started = time.perf_counter()
        predict_volume(model, image, PredictConfig(slices=SliceConfig(axis="k")), store=False)
    else:
        case = TrainingCase("phantom", image, label, structure="s", value=1, fully_labelled=True)
        config = load_preset("cpu_quick").train_config(
            {"device": "cpu", "seed": 0, "epochs": 1, "min_steps": 0, "val_fraction": 0.0, "slices": {"axis": "k"}}
        )
        fine_tune([case], config)
    seconds = time.perf_counter() - started
    return {"task": task, "slices": slices, "side": side, "s": seconds, "s_per_slice": seconds / slices,
            "peak_rss_mb": peak_rss_mb(), "rss_after_imports_mb": baseline}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--quick", action="store_true", help="22 and 44 slices only")
    parser.add_argument("--point", nargs=4, metavar=("TASK", "SLICES", "SIDE", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.point:
        task, slices, side, folder = args.point
        print(json.dumps(point(task, int(slices), int(side), args.threads, Path(folder))))
        return
    import tempfile

    from common import machine, write_results

    from samtune.models import build_model
    from samtune.models.runtime import encoder_runtime

    encoder_runtime(build_model("litemedsam", device="cpu"), "auto")  # export once, outside the points
    slices = SLICES[:2] if args.quick else SLICES
    plan = [("predict", n, 256) for n in slices] + [("predict", 44, s) for s in IN_PLANE if s != 256]
    plan += [("train", n, 256) for n in slices]
    env = {**os.environ, "SAMTUNE_EMBEDDING_STORE_MB": "0"}
    figures: dict[str, Any] = {"machine": machine(args.threads), "points": []}
    folder = Path(tempfile.mkdtemp(prefix="samtune-scaling-"))
    for task, n, side in plan:
        phantom_files(folder, n, side)
        command = [sys.executable, str(Path(__file__).resolve()), "--threads", str(args.threads)]
        done = subprocess.run(command + ["--point", task, str(n), str(side), str(folder)], env=env, cwd=HERE,
                              capture_output=True, text=True, check=True)  # fmt: skip
        row = json.loads(done.stdout.strip().splitlines()[-1])
        figures["points"].append(row)
        print(f"{task} {n} x {side}^2: {row['s']:.1f} s ({row['s_per_slice']:.2f} s/slice), "
              f"peak {row['peak_rss_mb']:.0f} MB", flush=True)  # fmt: skip
        write_results(args.json, figures)
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
