"""Encoder adaptation on the CPU (issue 17, lever 7): what the 15-minute budget buys on la_heart.

Trains ``cpu_auto`` with LoRA on the image encoder and the decoder (rank 4, the seed presets'
encoder+decoder LoRA) instead of the whole decoder on frozen embeddings, on the study's first pool
volume (one fully labelled volume, seed 0: the study's ``cpu_auto vol1 r0`` cell), for 2 epochs;
``lora_whole_decoder`` trains the whole mask decoder as well, for 4 epochs (every step runs the
encoder forward and backward: no embedding cache). Then segments the study's 10
held-out volumes automatically (the adapted encoder, its LoRA merged, exported to ONNX Runtime once)
and scores them against the references.

    .venv/bin/python benchmarks/study_encoder_lora_cpu.py --data ../shared/data/la_heart_dev \\
        --json benchmarks/results/encoder_lora_cpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from common import AXIS, case_ids, load_case, machine, peak_rss_mb, write_results

from samtune.data.pipeline import SliceConfig
from samtune.metrics import dice
from samtune.predict import PredictConfig, predict_volume
from samtune.train import TrainingCase, fine_tune, load_preset

ENCODER_LORA = {"method": "lora", "scope": "encoder_decoder", "lora": {"rank": 4, "alpha": 4.0}}
#: Runs: label -> (fine-tuning, epochs). The second trains the whole decoder too, as ``cpu_auto`` does, for
#: about the 15 minutes issue 17 allows three volumes; the first, half as long, LoRA only.
RUNS = {"lora": (ENCODER_LORA, 2), "lora_whole_decoder": ({**ENCODER_LORA, "train_modules": ["mask_decoder"]}, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="la_heart_dev folder (read in place, never copied)")
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--epochs", type=int, help="epochs over the volume's slices (default: each run's own)")
    parser.add_argument("--test-cases", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ids = case_ids(args.data)
    pool, test = ids[:10], ids[-args.test_cases :]
    image, label = load_case(args.data, pool[0])
    case = TrainingCase(pool[0], image, label, structure="left atrium", value=1, fully_labelled=True)
    everything = json.loads(args.json.read_text(encoding="utf-8")) if args.json and args.json.is_file() else {}
    for name in args.runs:
        finetune, epochs = RUNS[name]
        overrides = {"device": "cpu", "seed": 0, "slices": {"axis": AXIS}, "finetune": finetune,
                     "epochs": args.epochs or epochs, "min_steps": 0}  # fmt: skip
        figures: dict[str, Any] = {"machine": machine(args.threads), "pool_case": pool[0], "overrides": overrides}
        everything.setdefault("runs", {})[name] = figures
        run(case, load_preset("cpu_auto").train_config(overrides), args.data, test, figures)
        write_results(args.json, everything)
        print(name, {k: figures[k] for k in ("train_s", "mean_dice", "sd_dice", "median_predict_s")}, flush=True)


def run(case: TrainingCase, config: Any, data: Path, test: list[str], figures: dict[str, Any]) -> None:
    """Train on ``case``, segment the ``test`` volumes, and fill ``figures``."""
    started = time.perf_counter()
    outcome = fine_tune([case], config)
    figures["train_s"] = time.perf_counter() - started
    figures["history"] = outcome.result.history
    print(f"trained in {figures['train_s']:.0f} s", flush=True)
    model = outcome.model.eval()
    volumes: dict[str, Any] = {}
    for case_id in test:
        image, label = load_case(data, case_id)
        started = time.perf_counter()
        mask = predict_volume(model, image, PredictConfig(slices=SliceConfig(axis=AXIS)), store=False).array > 0
        volumes[case_id] = {"dice": dice(mask, label.array == 1), "s": time.perf_counter() - started}
        print(case_id, volumes[case_id], flush=True)
    values = [v["dice"] for v in volumes.values()]
    figures["volumes"] = volumes
    figures["mean_dice"], figures["sd_dice"] = statistics.fmean(values), statistics.pstdev(values)
    figures["median_predict_s"] = statistics.median(v["s"] for v in volumes.values())
    figures["peak_rss_mb"] = peak_rss_mb()


if __name__ == "__main__":
    main()
