"""GPU figures, in one run on one CUDA device (never part of the tests).

* whole-volume automatic prediction of an 88-slice 256 x 256 MR phantom: LiteMedSAM (its bundled
  weights) and SAM ViT-B at 1024 x 1024 (the real architecture with random weights: its speed does
  not depend on the values), batch 1 and 8, every slice encoded (no embedding store);
* train-step time and peak GPU memory of SAM ViT-B encoder+decoder LoRA (the ``single_dataset``
  preset) at 1024 x 1024, with bf16 autocast, gradient checkpointing off and on, batch 1 and 4.

    .venv/bin/python benchmarks/bench_gpu.py --json benchmarks/results/gpu.json

``--device cpu --smoke`` runs every code path on the CPU with tiny models of the same families, 2 slices
and 1 step (a check that the script works before a GPU is lent; its figures mean nothing).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
from common import machine, write_results

from samtune.data import make_phantom
from samtune.data.pipeline import SliceConfig
from samtune.models import build_model
from samtune.peft import apply_finetuning
from samtune.predict import PredictConfig, predict_volume
from samtune.train import Trainer, TrainingCase, build_samples, load_preset


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def prediction(device: torch.device, slices: int, repeats: int, tiny: bool) -> dict[str, Any]:
    image, _ = make_phantom(shape=(slices, 256, 256), seed=0)
    out: dict[str, Any] = {}
    for name, pretrained in (("litemedsam", True), ("sam_vit_b", False)):
        model = build_model(name, device=device, pretrained=pretrained, tiny=tiny)
        for batch in (1, 8):
            config = PredictConfig(slices=SliceConfig(axis="k"), batch_size=batch, runtime="torch")
            predict_volume(model, image, config, store=False)  # warm-up (kernels, allocator)
            _reset_peak(device)
            times = []
            for _ in range(repeats):
                _sync(device)
                started = time.perf_counter()
                predict_volume(model, image, config, store=False)
                _sync(device)
                times.append(time.perf_counter() - started)
            seconds = statistics.median(times)
            out[f"{name}_batch{batch}"] = {"s": seconds, "s_per_slice": seconds / slices, "peak_mb": _peak_mb(device)}
            print(f"predict {name} batch {batch}: {seconds:.2f} s for {slices} slices", flush=True)
        del model
    return out


def training(device: torch.device, steps: int, tiny: bool) -> dict[str, Any]:
    image, label = make_phantom(shape=(8, 256, 256), seed=1)
    case = TrainingCase("phantom", image, label, structure="s", value=1, fully_labelled=True)
    out: dict[str, Any] = {}
    for checkpointing in (False, True):
        for batch in (1, 4):
            config = load_preset("single_dataset").train_config({
                "device": str(device), "batch_size": batch, "mixed_precision": "bf16",
                "gradient_checkpointing": checkpointing, "augment": {"enabled": False}, "val_fraction": 0.0,
            })  # fmt: skip
            model = build_model("sam_vit_b", device=device, pretrained=False, tiny=tiny)
            apply_finetuning(model, config.finetune)
            samples = build_samples(
                [case], input_size=model.input_size, pixel_norm=model.pixel_norm, slices=config.slices,
                empty_policy="keep_all", keep_fraction=1.0, seed=0,
            )  # fmt: skip
            trainer = Trainer(model, config, samples)
            index = torch.arange(batch)
            trainer.train_step(index)  # warm-up
            _reset_peak(device)
            times = []
            for _ in range(steps):
                _sync(device)
                started = time.perf_counter()
                trainer.train_step(index)
                _sync(device)
                times.append(time.perf_counter() - started)
            key = f"vit_b_lora_bf16_ckpt{'on' if checkpointing else 'off'}_batch{batch}"
            out[key] = {"step_s": statistics.median(times), "peak_mb": _peak_mb(device)}
            print(key, out[key], flush=True)
            del trainer, model
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="tiny models, 2 slices, 1 step (a check)")
    parser.add_argument("--json")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("No CUDA device: this script measures on a GPU (--device cpu --smoke checks it runs).")
    slices, repeats, steps = (2, 1, 1) if args.smoke else (88, args.repeats, args.steps)
    figures: dict[str, Any] = {"machine": machine(device=str(device)), "smoke": args.smoke}
    figures["prediction"] = prediction(device, slices, repeats, args.smoke)
    write_results(args.json, figures)
    figures["training"] = training(device, steps, args.smoke)
    write_results(args.json, figures)


if __name__ == "__main__":
    main()
