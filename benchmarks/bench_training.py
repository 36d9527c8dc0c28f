"""Training speed, memory and sizes per preset, on the CPU with LiteMedSAM.

Prints, as medians measured in this one process:
  * train-step time per preset (the preset's method and scope on the LiteMedSAM backbone) at
    batch 1 and batch 4, and the process's peak resident memory after each;
  * decoder-only training with the embedding cache vs recomputing the encoder every step, as a
    ratio of step times measured in the same run;
  * trainable parameters and model-file size per preset.

Usage:  python benchmarks/bench_training.py [--repeats 3] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

from samtune.data import make_phantom
from samtune.models import build_model
from samtune.peft import apply_finetuning
from samtune.train import Trainer, TrainingCase, build_samples, list_presets
from samtune.train.run import fine_tune


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


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per figure (median reported)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict[str, object] = {
        "machine": f"{platform.machine()}, {args.threads} threads",
        "torch": torch.__version__,
        "backbone": "litemedsam (every preset's method and scope)",
        "presets": {},
    }
    for preset in list_presets():
        config = preset.train_config({"backbone": "litemedsam", "device": "cpu", "augment": {"enabled": False}})
        model = build_model("litemedsam")
        apply_finetuning(model, config.finetune)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        samples = _samples(model, config, 6)
        row: dict[str, float | int | str] = {
            "method": config.finetune.method,
            "scope": config.finetune.scope,
            "cache": str(config.uses_cache),
        }
        for batch in (1, 4):
            config.batch_size = batch
            trainer = Trainer(model, config, samples)
            row[f"step_s_batch{batch}"] = _step_seconds(trainer, batch, args.repeats)
            row[f"peak_rss_mb_after_batch{batch}"] = _peak_rss_mb()
        row["trainable_parameters"] = trainable
        with tempfile.TemporaryDirectory() as folder:
            small = preset.train_config(
                {
                    "backbone": "litemedsam",
                    "device": "cpu",
                    "epochs": 1,
                    "val_fraction": 0.0,
                    "augment": {"enabled": False},
                }
            )
            image, label = make_phantom(shape=(4, 64, 64), seed=1)
            outcome = fine_tune(
                [TrainingCase("c", image, label, fully_labelled=True)], small, out_dir=Path(folder) / "model"
            )
            assert outcome.folder is not None
            row["model_file_kb"] = round((outcome.folder / "weights.safetensors").stat().st_size / 1024, 1)
        results["presets"][preset.name] = row  # type: ignore[index]
        print(preset.name, row, flush=True)

    # Embedding cache vs recomputing the encoder, decoder-only LoRA, batch 4, same run.
    config = next(p for p in list_presets() if p.name == "cpu_quick").train_config({"device": "cpu", "batch_size": 4})
    model = build_model("litemedsam")
    apply_finetuning(model, config.finetune)
    samples = _samples(model, config, 6)
    cached = _step_seconds(Trainer(model, config, samples), 4, args.repeats)
    config.embedding_cache = "off"
    config.augment.enabled = False
    recomputed = _step_seconds(Trainer(model, config, samples), 4, args.repeats)
    results["cache"] = {
        "step_s_cached": cached,
        "step_s_recomputed": recomputed,
        "speedup": recomputed / cached,
    }
    print("cache", results["cache"], flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
