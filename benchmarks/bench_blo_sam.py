"""BLO-SAM on real cardiac MRI: k labelled slices from two volumes, automatic prediction of others.

For k in ``--k`` (default 4 and 8), ``k/2`` slices are painted in each of the first two volumes of
``cases.txt`` (evenly spaced through the slices that show the left atrium; the other slices are
left unpainted, so they are not training data). Trained models: BLO-SAM first order, BLO-SAM
second order, the joint ablation (prompt and weights in one optimiser on D1 and D2) and, for
context, ``cpu_quick`` (decoder LoRA without a learned prompt). Each predicts the next
``--test-cases`` volumes in automatic mode (no prompt); the foreground Dice per volume is reported
with the zero-shot LiteMedSAM baseline and each run's training time.

All models share LiteMedSAM's frozen image encoder, so each test volume is encoded once and the
embeddings are reused by every model (only the mask decoder differs).

The data is never copied: pass its folder (from the project root ``../shared/data/la_heart_dev``).

    .venv/bin/python benchmarks/bench_blo_sam.py --data ../shared/data/la_heart_dev --json out.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import AXIS, machine, masks_from_embeddings, painted_case, write_results

from samtune.data import Volume, prepare_slices, read_label, read_volume
from samtune.data.pipeline import SliceConfig, slice_grid
from samtune.data.slicing import extract_slices
from samtune.metrics import dice
from samtune.models import SamModel, build_model
from samtune.train import fine_tune, load_preset

METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "blo_sam_first": ("blo_sam", {}),
    "blo_sam_second": ("blo_sam", {"bilevel": {"hypergradient": "second"}}),
    "joint_ablation": ("blo_sam", {"optimiser": "joint"}),
    "cpu_quick": ("cpu_quick", {"val_fraction": 0.0}),
}


def encode_volume(model: SamModel, image: Volume, slices: SliceConfig) -> tuple[torch.Tensor, Any]:
    """All slices of ``image`` encoded once (float16 on the CPU) and the grid to map masks back."""
    tensor, grid = prepare_slices(image, input_size=model.input_size, pixel_norm=model.pixel_norm, config=slices)
    chunks = []
    with torch.no_grad():
        for start in range(0, tensor.shape[0], 1):
            chunks.append(model.encode(tensor[start : start + 1]).to(torch.float16))
    return torch.cat(chunks), grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the la_heart_dev folder")
    parser.add_argument("--k", type=int, nargs="+", default=[4, 8], help="labelled slices in total (even)")
    parser.add_argument("--test-cases", type=int, default=6, help="volumes predicted (after the two training ones)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--epochs", type=int, help="override the presets' epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--cache-dir", type=Path, help="keep the test volumes' embeddings here between runs (never in the repository)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    ids = (args.data / "cases.txt").read_text(encoding="utf-8").split()
    train_ids, test_ids = ids[:2], ids[2 : 2 + args.test_cases]
    slices = SliceConfig(axis=AXIS)

    def load(case_id: str) -> tuple[Volume, Volume]:
        image = read_volume(args.data / "images" / f"{case_id}.nii.gz")
        return image, read_label(args.data / "labels" / f"{case_id}.nii.gz", reference=image)

    base = build_model("litemedsam", device="cpu")
    started = time.perf_counter()
    test: dict[str, tuple[torch.Tensor, Any, np.ndarray]] = {}
    encoded_slices = 0
    for case_id in test_ids:
        image, label = load(case_id)
        cached = args.cache_dir / f"{case_id}-litemedsam-{AXIS}.pt" if args.cache_dir else None
        if cached is not None and cached.is_file():
            embeddings = torch.load(cached, weights_only=True)
            grid = slice_grid(image, input_size=base.input_size, axis=AXIS)
        else:
            embeddings, grid = encode_volume(base, image, slices)
            encoded_slices += embeddings.shape[0]
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                torch.save(embeddings, cached)
        test[case_id] = (embeddings, grid, extract_slices(label.array == 1, grid.axis))
        print(f"encoded {case_id}: {embeddings.shape[0]} slices", flush=True)
    encode_seconds = time.perf_counter() - started

    def evaluate(model: SamModel) -> tuple[dict[str, float], float]:
        scores, seconds = {}, []
        for case_id, (embeddings, grid, reference) in test.items():
            t0 = time.perf_counter()
            prediction = masks_from_embeddings(model, embeddings, grid)
            seconds.append(time.perf_counter() - t0)
            scores[case_id] = dice(prediction, reference)
        return scores, statistics.median(seconds)

    results: dict[str, Any] = {
        "machine": machine(args.threads),
        "train_cases": train_ids,
        "test_cases": test_ids,
        "encode_seconds_per_slice": encode_seconds / encoded_slices if encoded_slices else None,
        "runs": [],
    }
    zero_shot, decode_s = evaluate(base)
    results["runs"].append({"method": "zero_shot", "k": 0, "dice": zero_shot, "train_seconds": 0.0})
    print(f"zero_shot: mean Dice {np.mean(list(zero_shot.values())):.3f}", flush=True)
    train_data = {case_id: load(case_id) for case_id in train_ids}
    for k in args.k:
        cases, painted = [], {}
        for case_id in train_ids:
            case, chosen = painted_case(case_id, *train_data[case_id], k // len(train_ids))
            cases.append(case)
            painted[case_id] = chosen
        for method in args.methods:
            preset, overrides = METHODS[method]
            extra: dict[str, Any] = {"device": "cpu", "seed": args.seed, "slices": {"axis": AXIS}}
            if args.epochs:
                extra["epochs"] = args.epochs
            config = load_preset(preset).train_config({**overrides, **extra})
            t0 = time.perf_counter()
            outcome = fine_tune(cases, config)
            seconds = time.perf_counter() - t0
            scores, _ = evaluate(outcome.model)
            best = outcome.result.history[outcome.result.best_epoch - 1]
            run = {
                "method": method,
                "k": k,
                "painted": painted,
                "dice": scores,
                "train_seconds": seconds,
                "best_epoch": outcome.result.best_epoch,
                "d2_dice": best.get("d2_dice"),
            }
            results["runs"].append(run)
            print(f"k={k} {method}: mean Dice {np.mean(list(scores.values())):.3f}, train {seconds:.0f} s", flush=True)
    results["decode_seconds_per_volume"] = decode_s

    print()
    print("| k | method | " + " | ".join(test_ids) + " | mean | train s |")
    print("|---" * (len(test_ids) + 4) + "|")
    for run in results["runs"]:
        values = [run["dice"][c] for c in test_ids]
        cells = " | ".join(f"{v:.3f}" for v in values)
        print(f"| {run['k']} | {run['method']} | {cells} | {np.mean(values):.3f} | {run['train_seconds']:.0f} |")
    if encoded_slices:
        print(f"\nencoder {encode_seconds / encoded_slices:.2f} s/slice (once per test slice, shared by all models)")
    write_results(args.json, results)


if __name__ == "__main__":
    main()
