"""Training speed, memory and sizes per preset, on the CPU with LiteMedSAM.

Prints, as medians measured in this one process:
  * train-step time per preset (the preset's method and scope on the LiteMedSAM backbone) at
    batch 1 and batch 4, and the process's peak resident memory after each;
  * decoder-only training with the embedding cache vs recomputing the encoder every step, as a
    ratio of step times measured in the same run;
  * trainable parameters and model-file size per preset.

Each preset runs in its own process, so its peak resident memory is its own.

Usage:  python benchmarks/bench_training.py [--repeats 3] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import machine, peak_rss_mb, write_results

from samtune.data import make_phantom
from samtune.models import build_model
from samtune.peft import apply_finetuning
from samtune.train import Trainer, TrainingCase, build_samples, list_presets
from samtune.train.config import EmbeddingCacheMode
from samtune.train.fine_tuning import fine_tune


def _samples(model, config, n_slices: int):  # type: ignore[no-untyped-def]
    image, label = make_phantom(shape=(n_slices, 96, 96), seed=0)
    label = label.with_array(label.array * 0 + (label.array > 0))
    case = TrainingCase("bench", image, label, fully_labelled=True)
    return build_samples(
        [case], input_size=model.input_size, pixel_norm=model.pixel_norm, slices=config.slices,
        empty_policy="keep_all", keep_fraction=1.0, seed=0,
    )  # fmt: skip


def _step_seconds(trainer: Trainer, batch: int, repeats: int) -> float:
    index = torch.arange(batch)
    trainer.train_step(index)  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        trainer.train_step(index)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bench_preset(name: str, repeats: int) -> dict[str, float | int | str]:
    """Step times, peak memory, trainable parameters and file size of one preset (on LiteMedSAM)."""
    preset = next(p for p in list_presets() if p.name == name)
    config = preset.train_config({"backbone": "litemedsam", "device": "cpu", "augment": {"enabled": False}})
    model = build_model("litemedsam")
    apply_finetuning(model, config.finetune)
    samples = _samples(model, config, 6)
    row: dict[str, float | int | str] = {
        "method": config.finetune.method,
        "scope": config.finetune.scope,
        "cache": str(config.uses_cache),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    for batch in (1, 4):
        config.batch_size = batch
        row[f"step_s_batch{batch}"] = _step_seconds(Trainer(model, config, samples), batch, repeats)
        row[f"peak_rss_mb_after_batch{batch}"] = peak_rss_mb()
    with tempfile.TemporaryDirectory() as folder:
        small = preset.train_config(
            {"backbone": "litemedsam", "device": "cpu", "epochs": 1, "val_fraction": 0.0, "augment": {"enabled": False}}
        )
        image, label = make_phantom(shape=(4, 64, 64), seed=1)
        outcome = fine_tune([TrainingCase("c", image, label, fully_labelled=True)], small, out_dir=Path(folder) / "m")
        assert outcome.folder is not None
        row["model_file_kb"] = round((outcome.folder / "weights.safetensors").stat().st_size / 1024, 1)
    return row


def bench_cache(repeats: int) -> dict[str, float]:
    """Decoder-only LoRA step with cached embeddings vs recomputing the encoder, batch 4, same run."""
    config = next(p for p in list_presets() if p.name == "cpu_quick").train_config(
        {"device": "cpu", "batch_size": 4, "augment": {"enabled": False}}
    )
    model = build_model("litemedsam")
    apply_finetuning(model, config.finetune)
    samples = _samples(model, config, 6)
    cached = _step_seconds(Trainer(model, config, samples), 4, repeats)
    config.embedding_cache = EmbeddingCacheMode.OFF
    recomputed = _step_seconds(Trainer(model, config, samples), 4, repeats)
    return {"step_s_cached": cached, "step_s_recomputed": recomputed, "speedup": recomputed / cached}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per figure (median reported)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--presets", nargs="+", help="only these presets (default: all)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--only", help=argparse.SUPPRESS)  # internal: one preset (or 'cache') per process
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.only:
        row = bench_cache(args.repeats) if args.only == "cache" else bench_preset(args.only, args.repeats)
        print(json.dumps(row))
        return
    results: dict[str, object] = {
        "machine": machine(args.threads),
        "backbone": "litemedsam (every preset's method and scope)",
        "presets": {},
    }
    for name in (args.presets or [p.name for p in list_presets()]) + ["cache"]:
        command = [sys.executable, "-W", "ignore", __file__, "--only", name, "--repeats", str(args.repeats),
                   "--threads", str(args.threads)]  # fmt: skip
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        row = json.loads(output)
        if name == "cache":
            results["cache"] = row
        else:
            results["presets"][name] = row  # type: ignore[index]
        print(name, row, flush=True)
    write_results(args.json, results)


if __name__ == "__main__":
    main()
