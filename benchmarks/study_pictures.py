"""2D study: automatic Dice on held-out pictures after fine-tuning on 8 and 32 labelled pictures.

Point it at a folder of pictures and a folder of masks paired by name, as ``samtune manifest`` pairs
them (ISIC, Kvasir-SEG, a microscopy set, ...)::

    .venv/bin/python benchmarks/study_pictures.py --images DIR --labels DIR \
        --json benchmarks/results/study_pictures.json

Without ``--images`` it makes dermoscopy-like phantom pictures (``samtune.data.make_picture_phantom``:
RGB JPEGs of 280 x 384 with 0/255 PNG masks, every fourth without a lesion). The test pictures are
drawn once (seed 0) and never trained on; each training set of N pictures is drawn from the others
per seed. Each cell fine-tunes the preset (default ``cpu_quick``) from scratch; its checkpoint is
chosen on a validation split of its own training pictures (the preset's ``val_fraction``), never on
the test pictures. The peer is what a user would do without fine-tuning: pretrained LiteMedSAM with
the reference mask's bounding box on every test picture that has a lesion (an oracle prompt).

Reported per cell: Dice on the test pictures with a lesion (mean and sd over the pictures of all
seeds, and the sd of the per-seed means), the share of lesion-free test pictures predicted empty,
and the training time. The embedding store is off, so every training time includes encoding.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("SAMTUNE_EMBEDDING_STORE_MB", "0")

import numpy as np
import torch
from common import machine, write_results

from samtune.data import read_label, read_volume, write_picture_cases
from samtune.metrics import dice
from samtune.models import build_model
from samtune.predict import PredictConfig, predict_volume
from samtune.predict.user_prompts import SlicePrompt
from samtune.train import fine_tune, load_preset
from samtune.train.manifest import build_manifest, cases_from_entries


def phantom_dataset(folder: Path, n: int) -> tuple[Path, Path]:
    images, labels = folder / "images", folder / "masks"
    images.mkdir(parents=True)
    labels.mkdir()
    write_picture_cases(images, labels, n=n, size=(280, 384))
    return images, labels


def box_of(mask: np.ndarray) -> SlicePrompt:
    rows, cols = np.nonzero(mask)
    return SlicePrompt(boxes=np.array([[cols.min(), rows.min(), cols.max(), rows.max()]], dtype=np.float32))


def segment(model: Any, entries: list[dict[str, Any]], *, prompted: bool = False) -> list[dict[str, Any]]:
    """Per test picture: Dice (pictures with a lesion) or whether the prediction is empty (without)."""
    rows = []
    for entry in entries:
        image = read_volume(entry["image"])
        reference = read_label(entry["label"], reference=image).array[0] != 0
        if prompted and not reference.any():
            continue  # a box needs a lesion: the prompted peer is scored on lesion pictures only
        prompts = {0: box_of(reference)} if prompted else None
        mask = predict_volume(model, image, PredictConfig(), prompts=prompts).array[0] != 0
        row: dict[str, Any] = {"id": entry["id"], "lesion": bool(reference.any())}
        row["dice" if reference.any() else "empty"] = dice(mask, reference) if reference.any() else not mask.any()
        rows.append(row)
    return rows


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    dices = [r["dice"] for run in runs for r in run["pictures"] if "dice" in r]
    empties = [r["empty"] for run in runs for r in run["pictures"] if "empty" in r]
    means = [statistics.fmean(r["dice"] for r in run["pictures"] if "dice" in r) for run in runs]
    out: dict[str, Any] = {"dice_mean": statistics.fmean(dices), "dice_sd": statistics.pstdev(dices),
                           "seed_means": means, "pictures": len(dices)}  # fmt: skip
    if len(means) > 1:
        out["dice_sd_over_seeds"] = statistics.stdev(means)
    if empties:
        out["lesion_free_predicted_empty"] = sum(empties) / len(empties)
    if all("train_s" in run for run in runs):
        out["train_s_median"] = statistics.median(run["train_s"] for run in runs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, help="folder of pictures (default: phantom pictures)")
    parser.add_argument("--labels", type=Path, help="folder of masks paired with --images by name")
    parser.add_argument("--phantoms", type=int, default=72, help="phantom pictures to make without --images")
    parser.add_argument("--test", type=int, default=20, help="held-out test pictures")
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 32], help="labelled pictures to train on")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--preset", default="cpu_quick")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if (args.images is None) != (args.labels is None):
        parser.error("give --images and --labels together (or neither, for phantom pictures)")
    torch.set_num_threads(args.threads)
    scratch = tempfile.TemporaryDirectory(prefix="samtune-pictures-")
    images, labels = (args.images, args.labels) if args.images else phantom_dataset(Path(scratch.name), args.phantoms)
    entries = build_manifest(images, labels)["cases"]
    order = np.random.default_rng(0).permutation(len(entries))
    test = [entries[i] for i in order[: args.test]]
    pool = [entries[i] for i in order[args.test :]]
    if max(args.sizes) > len(pool):
        sys.exit(f"{len(entries)} pictures: {args.test} for testing leave {len(pool)}, fewer than {max(args.sizes)}.")
    figures: dict[str, Any] = {
        "machine": machine(args.threads), "dataset": str(images) if args.images else "phantom pictures 280x384",
        "pictures": len(entries), "test_pictures": len(test), "test_with_lesion": sum(
            bool(read_label(e["label"]).array.any()) for e in test), "preset": args.preset, "cells": {},
    }  # fmt: skip
    peer = segment(build_model("litemedsam", device="cpu"), test, prompted=True)
    figures["peer_zero_shot_box"] = summary([{"pictures": peer}])
    print(f"peer (pretrained, box from the reference): Dice {figures['peer_zero_shot_box']['dice_mean']:.3f}")
    for size in args.sizes:
        runs = []
        for seed in args.seeds:
            chosen = [pool[i] for i in np.random.default_rng(100 + seed).permutation(len(pool))[:size]]
            config = load_preset(args.preset).train_config({"device": "cpu", "seed": seed})
            started = time.perf_counter()
            outcome = fine_tune(cases_from_entries(chosen), config)
            seconds = time.perf_counter() - started
            rows = segment(outcome.model.eval(), test)
            runs.append({"seed": seed, "train_s": seconds, "train_ids": [e["id"] for e in chosen], "pictures": rows})
            mean = statistics.fmean(r["dice"] for r in rows if "dice" in r)
            print(f"{size} pictures, seed {seed}: Dice {mean:.3f}, trained in {seconds:.0f} s", flush=True)
        figures["cells"][str(size)] = {**summary(runs), "runs": runs}
        write_results(args.json, figures)
    write_results(args.json, figures)
    scratch.cleanup()


if __name__ == "__main__":
    main()
