"""Regenerate ``docs/benchmarks.md`` (tables and plots) from the JSON files the benchmarks wrote.

Every number in the report comes from a results file; a benchmark whose file is missing gets a line
saying how to produce it. Run by ``run_all.py``; on its own:

    .venv/bin/python benchmarks/report.py --results benchmarks/results --out docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from report_loop import correction_loop_section  # noqa: E402
from report_speed import decoder_section, gpu_section, int8_section, scaling_section, volume_speed_section  # noqa: E402
from report_study import encoder_lora_section, pictures_section, study_section  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GOAL_S = 30.0


def machine_line(info: Any) -> str:
    """One line naming the machine from a results file's ``machine`` entry (old files: fewer fields)."""
    if isinstance(info, str):
        return info
    if not isinstance(info, dict):
        return "machine not recorded"
    cpu = info.get("cpu") or info.get("processor") or info.get("platform", "")
    cores = info.get("cores") or info.get("cpus")
    parts = [f"{cpu}, {cores} cores" if cores else str(cpu)]
    if info.get("threads"):
        parts.append(f"{info['threads']} threads")
    parts.append(info.get("gpu") or info.get("device", "CPU"))
    if info.get("torch"):
        parts.append(f"torch {info['torch']}")
    if info.get("date"):
        parts.append(f"measured {info['date']}")
    line = ", ".join(str(p) for p in parts if p)
    return line + (f". {info['note'].rstrip('.')}" if info.get("note") else "")


def seconds(value: float) -> str:
    return f"{value:.2f} s" if value < 10 else f"{value:.0f} s"


# -- prediction speed ----------------------------------------------------------------------------
def prediction_section(pred: dict[str, Any], images: Path, link: str) -> list[str]:
    enc = pred["encoder"]
    lines = [
        "## Prediction speed: the encoder levers and whole-volume automatic prediction",
        "",
        f"`benchmarks/bench_prediction.py` — LiteMedSAM, CPU. Machine: {machine_line(pred['machine'])}.",
        "",
        "| image encoder, per 256² slice | seconds | speed-up vs PyTorch fp32 (same run) "
        "| largest difference from PyTorch fp32's embedding |",
        "|---|---|---|---|",
    ]
    names = {
        "torch_fp32": "PyTorch fp32, batch 1",
        "torch_fp32_batch4": "PyTorch fp32, batch 4 (per slice)",
        "torch_bf16_autocast": "PyTorch bf16 autocast (1 run)",
        "torch_compile": "PyTorch fp32, `torch.compile` (inductor)",
        "torch_channels_last": "PyTorch fp32, channels-last",
        "onnxruntime_fp32": "**ONNX Runtime fp32** (`runtime=onnxruntime`, the default when installed)",
        "openvino_fp32": "OpenVINO fp32 (comparison only)",
        "torch_fp32_again": "PyTorch fp32, batch 1, again at the end (drift check)",
    }
    for key, label in names.items():
        row = enc.get(key)
        if isinstance(row, dict):
            lines.append(
                f"| {label} | {row['s_per_slice']:.3f} | {row['speedup_vs_torch_fp32']:.2f}× "
                f"| {row['max_abs_diff']:.1e} |"
            )
    if "torch_compile_first_call_s" in enc:
        lines.append(f"| (`torch.compile`'s first call, compiling) | {enc['torch_compile_first_call_s']:.0f} | | |")
    lines += [
        f"| mask decoder, per slice (automatic mode) | {enc['decoder_s_per_slice']:.3f} | | |",
        "",
        f"ONNX Runtime needs the encoder exported once ({enc['onnxruntime_export_s']:.1f} s; kept in the per-user "
        f"cache) and then loads it in {enc['onnxruntime_load_cached_s']:.2f} s.",
        "",
    ]
    variants: list[tuple[str, float]] = []
    synthetic = pred.get("synthetic_volume_88x256x256")
    if synthetic:
        lines += [
            "| whole-volume automatic prediction, end to end | seconds |",
            "|---|---|",
            f"| synthetic 88 × 256 × 256 volume, PyTorch encoder | {synthetic['torch_s']:.1f} |",
            f"| synthetic 88 × 256 × 256 volume, ONNX Runtime encoder | {synthetic['onnxruntime_s']:.1f} "
            f"({synthetic['speedup']:.2f}× faster) |",
            "",
        ]
        variants += [
            ("synthetic, PyTorch", synthetic["torch_s"]),
            ("synthetic, ONNX Runtime", synthetic["onnxruntime_s"]),
        ]
    real = pred.get("la_heart_volume")
    if real:
        lines += [
            f"A `cpu_quick` model trained on 8 painted slices of {real['train_case'][:8]}… "
            f"({real['train_s']:.0f} s) segments the held-out volume {real['test_case'][:8]}… "
            "(88 slices, 256² model input):",
            "",
            "| encoder, slices | seconds | speed-up vs PyTorch | Dice | Dice change vs PyTorch | voxels differing |",
            "|---|---|---|---|---|---|",
        ]
        labels = {
            "torch": "PyTorch, every slice",
            "onnxruntime": "ONNX Runtime, every slice",
            "onnxruntime_search4": "ONNX Runtime, slice search step 4",
            "onnxruntime_search8": "ONNX Runtime, slice search step 8",
        }
        for key, label in labels.items():
            row = real[key]
            change = row.get("dice_change_vs_torch")
            lines.append(
                f"| {label} | {row['s']:.1f} | {row.get('speedup_vs_torch', 1.0):.2f}× | {row['dice']:.4f} | "
                f"{'–' if change is None else f'{change:+.4f}'} | {row.get('voxels_differing_from_torch', 0)} |"
            )
            variants.append((f"la_heart, {label}", row["s"]))
        lines.append("")
        torch_real = real["torch"]["s"] / 88
        ort_real = real["onnxruntime"]["s"] / 88
        lines += [
            f"The encoder table uses a random-noise input. PyTorch ran it at {enc['torch_fp32']['s_per_slice']:.2f} s "
            f"per slice but segmented the MRI volume at {torch_real:.2f} s per slice end to end; ONNX Runtime "
            f"took {enc['onnxruntime_fp32']['s_per_slice']:.2f} and {ort_real:.2f} s. On real data the gain is the "
            f"{real['onnxruntime']['speedup_vs_torch']:.2f}× of this table, not the noise figure; the masks are "
            "identical.",
            "",
        ]
    bound = pred.get("compute_bound")
    if variants:
        best_name, best = min(variants, key=lambda v: v[1])
        verdict = "met" if best <= GOAL_S else "not met"
        lines += [f"**The ≤ {GOAL_S:.0f} s goal is {verdict} on this machine**: best {best:.1f} s ({best_name})."]
        if bound:
            lines += [
                "",
                f"What limits it: the encoder costs {bound['encoder_gflop_per_slice']:.1f} GFLOP per slice "
                f"(multiply-adds counted as 2), and this machine multiplies fp32 matrices at "
                f"{bound['matmul_gflops']:.0f} GFLOP/s (2048² matmul, same run). Even at that speed the encoder "
                f"alone would need {bound['encoder_s_per_slice_at_matmul_speed']:.2f} s per slice, "
                f"{bound['volume_88_encoder_s_at_matmul_speed']:.0f} s for 88 slices; 30 s allows "
                f"{GOAL_S / 88:.2f} s per slice."
                + (
                    " So no fp32 runtime can meet the goal on this machine while encoding every slice; only "
                    "encoding fewer slices, lower precision that keeps the masks (the int8 encoders below do not), "
                    "more cores or a GPU can."
                    if bound["volume_88_encoder_s_at_matmul_speed"] > GOAL_S
                    else ""
                ),
            ]
        lines.append("")
        _speed_plot(variants, images / "prediction_speed.png")
        lines += [f"![Whole-volume prediction time]({link}/prediction_speed.png)", ""]
    lines.append(f"Peak resident memory of the benchmark process: {pred['peak_rss_mb'] / 1024:.2f} GB.")
    lines.append("")
    if "int8_encoder" in pred:
        lines += int8_section(pred["int8_encoder"], real)
    return [*lines, ""]


def int8_results_section(data: dict[str, Any]) -> list[str]:
    """``bench_prediction.py --int8-only``: the int8 table, with its own machine line."""
    lines = int8_section(data["int8_encoder"], data.get("la_heart_volume"))
    lines.insert(2, f"`benchmarks/bench_prediction.py --int8-only`. Machine: {machine_line(data['machine'])}.")
    lines.insert(3, "")
    return [*lines, ""]


def _speed_plot(variants: list[tuple[str, float]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(variants) + 1.2), dpi=120)
    names, values = zip(*variants)
    ax.barh(range(len(values)), values, color="#4c72b0")
    ax.set_yticks(range(len(values)), names, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(GOAL_S, color="crimson", linestyle="--", label=f"goal {GOAL_S:.0f} s")
    ax.set_xlabel("seconds for an 88-slice volume (2 CPU threads)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# -- other sections ------------------------------------------------------------------------------
def training_section(train: dict[str, Any]) -> list[str]:
    lines = [
        "## Training speed, memory and sizes per preset",
        "",
        "`benchmarks/bench_training.py` — every preset's method and scope on LiteMedSAM, fp32, CPU, no "
        "augmentation, one process per preset; step = forward, loss, backward, optimiser step; median after a "
        f"warm-up. Machine: {machine_line(train['machine'])}.",
        "",
        "| preset (method, scope) | step, batch 1 | step, batch 4 | peak RSS, batch 1 / 4 | trainable parameters "
        "| model file |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in train["presets"].items():
        lines.append(
            f"| `{name}` ({row['method']}, {row['scope']}{', cached' if row['cache'] == 'True' else ''}) | "
            f"{row['step_s_batch1']:.2f} s | {row['step_s_batch4']:.2f} s | "
            f"{row['peak_rss_mb_after_batch1'] / 1024:.2f} / {row['peak_rss_mb_after_batch4'] / 1024:.2f} GB | "
            f"{row['trainable_parameters']:,} | {row['model_file_kb']:.0f} KB |"
        )
    cache = train.get("cache")
    if cache:
        lines += [
            "",
            f"Embedding cache, same run (decoder-only LoRA, batch 4): {cache['step_s_cached']:.2f} s per step with "
            f"cached embeddings vs {cache['step_s_recomputed']:.2f} s recomputing the encoder: "
            f"**{cache['speedup']:.1f}×**.",
        ]
    return [*lines, ""]


def interactive_section(data: dict[str, Any], title: str) -> list[str]:
    return [
        f"## Interactive prompting{title}",
        "",
        f"`benchmarks/bench_interactive.py` — predictor session, {data.get('backbone', 'litemedsam')}, "
        f"16 × 256 × 256 phantom. Machine: {machine_line(data['machine'])}"
        + (f", encoder runtime {data['runtime']}" if data.get("runtime") else "")
        + ".",
        "",
        "| what | median | goal |",
        "|---|---|---|",
        f"| click on a slice whose embedding is cached ({data['n_cached']} clicks) "
        f"| {data['cached_slice_click_s']:.3f} s | {_goal(data['cached_slice_click_s'], 0.1)} |",
        f"| first click on a new slice ({data['n_new']} slices) | {data['new_slice_click_s']:.3f} s "
        f"| {_goal(data['new_slice_click_s'], 1.0)} |",
        f"| ratio new / cached, same run | {data['ratio_new_over_cached']:.1f}× | |",
        f"| propagation to the neighbouring slice ({data['propagated_slices']} slices) | "
        f"{data['propagation_s_per_slice']:.3f} s per slice | |",
        "",
    ]


def _goal(value: float, goal: float) -> str:
    return f"≤ {goal:g} s: {'met' if value <= goal else 'not met'}"


def worker_section(data: dict[str, Any]) -> list[str]:
    runs = data["runs"]
    labels = {
        "in_process": "in-process (`run_train_job`, 2 threads)",
        "worker": "worker subprocess (`python -m samtune.worker --job`)",
        "torchrun_1x2threads": "`torchrun`, 1 process × 2 threads",
        "torchrun_2x1thread": "`torchrun`, 2 gloo processes × 1 thread",
    }
    lines = [
        "## Worker overhead and 1 vs 2 processes",
        "",
        "`benchmarks/bench_worker.py` — the same `cpu_quick` training job (LiteMedSAM, phantom cases, embedding "
        f"cache). Machine: {machine_line(data['machine'])}.",
        "",
        "| how | wall time | time per training step |",
        "|---|---|---|",
    ]
    lines += [f"| {labels[k]} | {v['wall_s']:.1f} s | {v['step_s']:.3f} s |" for k, v in runs.items() if k in labels]
    lines += [
        "",
        f"Worker overhead {data['worker_overhead_s']:.1f} s once per job; 2 gloo processes vs 1 process with 2 "
        f"threads: {data['two_process_speedup_wall']:.2f}× wall, {data['two_process_speedup_step']:.2f}× per step.",
        "",
    ]
    return lines


def blo_sam_section(data: dict[str, Any]) -> list[str]:
    tests = data["test_cases"]
    lines = [
        "## BLO-SAM ablation on real cardiac MRI",
        "",
        "`benchmarks/bench_blo_sam.py` — LiteMedSAM; k painted slices, k/2 in each of the first two volumes; "
        f"BLO-SAM's D1 and D2 are the two volumes; automatic Dice on the next {len(tests)} volumes. Machine: "
        f"{machine_line(data['machine'])}.",
        "",
        "| k | method | " + " | ".join(t[:6] + "…" for t in tests) + " | mean | train |",
        "|---|---|" + "---|" * len(tests) + "---|---|",
    ]
    for run in data["runs"]:
        values = [run["dice"][t] for t in tests]
        lines.append(
            f"| {run['k']} | {run['method']} | " + " | ".join(f"{v:.3f}" for v in values)
            + f" | {statistics.mean(values):.3f} | {run['train_seconds']:.0f} s |"
        )  # fmt: skip
    lines.append("")
    for k in sorted({r["k"] for r in data["runs"] if r["k"]}):
        means = {r["method"]: statistics.mean(r["dice"].values()) for r in data["runs"] if r["k"] == k}
        best = max(means, key=lambda m: means[m])
        lines.append(
            f"- k = {k}: best mean Dice {means[best]:.3f} ({best}); "
            + ", ".join(f"{m} {v:.3f}" for m, v in means.items() if m != best)
            + "."
        )
    lines.append(
        "\nOne seed and four test volumes: differences of a few hundredths are within the spread the real-data "
        "study above shows between repeats."
    )
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--images", type=Path, default=ROOT / "docs" / "images", help="where plots go")
    args = parser.parse_args()
    found = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(args.results.glob("*.json"))}
    link = os.path.relpath(args.images, args.out.parent)
    lines = [
        "# Benchmarks",
        "",
        "Generated by `benchmarks/report.py` from the JSON files in `benchmarks/results/` (run the whole suite with "
        "`benchmarks/run_all.py`, see `benchmarks/README.md`); do not edit by hand. Every timing is a median over "
        "repeated runs in one process unless a row says otherwise, comparisons are ratios measured in the same run, "
        "and each section names its machine. Timings are never asserted by tests.",
        "",
    ]
    sections: list[tuple[str, Any]] = [
        ("study_la_heart", lambda d: study_section(d, args.images, link, machine_line)),
        ("encoder_lora_cpu", lambda d: encoder_lora_section(d, found.get("study_la_heart"), machine_line)),
        ("study_pictures", lambda d: pictures_section(d, machine_line)),
        ("study_correction_loop", lambda d: correction_loop_section(d, args.images, link, machine_line)),
        ("prediction", lambda d: prediction_section(d, args.images, link)),
        ("prediction_int8", int8_results_section),
        ("volume_speed", lambda d: volume_speed_section(d, machine_line)),
        ("decoder", lambda d: decoder_section(d, machine_line)),
        ("scaling", lambda d: scaling_section(d, args.images, link, machine_line)),
        ("training", training_section),
        ("interactive", lambda d: interactive_section(d, " (Segment Editor effect), CPU")),
        ("interactive_cuda", lambda d: interactive_section(d, ", GPU")),
        ("worker", worker_section),
        ("blo_sam_la_heart", blo_sam_section),
    ]
    for name, render in sections:
        if name in found:
            lines += render(found[name])
        elif name != "interactive_cuda":
            lines += [f"## {name}", "", f"Not measured yet: `benchmarks/run_all.py --only {name}`.", ""]
    lines += gpu_section(found.get("gpu"), machine_line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
