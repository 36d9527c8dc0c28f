"""Report sections for the speed work: whole-volume cold/warm times on la_heart_dev, the int8
encoder, the scaling plot and the GPU figures (used by ``report.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLD_GOAL_S = 30.0
WARM_GOAL_S = 5.0

_VARIANTS = {
    "cold": "cold: `decoder_refine`, every slice encoded (fills the store)",
    "cold_search4": "cold: `decoder_refine`, slice search step 4 (empty store)",
    "fp32": "cold without the store (float32 embeddings, as before)",
    "decoder_refine_warm": "warm: `decoder_refine`, every slice",
    "decoder_refine_warm_search4": "warm: `decoder_refine`, slice search step 4",
    "decoder_refine_warm_search8": "warm: `decoder_refine`, slice search step 8",
    "cpu_quick_warm": "warm: `cpu_quick`, every slice",
    "cpu_quick_warm_search4": "warm: `cpu_quick`, slice search step 4",
    "cpu_quick_warm_search8": "warm: `cpu_quick`, slice search step 8",
    "cpu_quick_one_pass_warm": "warm: `cpu_quick` without its refinement (`--refine 0`), every slice",
    "cpu_quick_one_pass_warm_search4": "warm: `cpu_quick` without its refinement, slice search step 4",
    "cpu_quick_one_pass_warm_search8": "warm: `cpu_quick` without its refinement, slice search step 8",
    "decoder_refine_int8_warm": "warm: `decoder_refine`, int8 decoder, every slice",
    "decoder_refine_int8_warm_search8": "warm: `decoder_refine`, int8 decoder, slice search step 8",
    "cpu_quick_int8_warm": "warm: `cpu_quick`, int8 decoder, every slice",
    "cpu_quick_int8_warm_search8": "warm: `cpu_quick`, int8 decoder, slice search step 8",
}
#: The Dice change the int8 decoder may make on every held-out volume to be on by default (issue 18).
INT8_BAR = 0.005


def volume_speed_section(data: dict[str, Any], machine_line: Any) -> list[str]:
    summary = data.get("summary") or {}
    volumes = data.get("volumes", {})
    lines = [
        "## Whole-volume time on held-out la_heart volumes: cold, warm (embedding store), slice search",
        "",
        f"`benchmarks/bench_volume_speed.py` — LiteMedSAM, ONNX Runtime encoder and decoder, 88 slices per volume, "
        f"{len(volumes)} held-out volumes (the study's test volumes). Machine: {machine_line(data['machine'])}. "
        f"Models trained on the pool volume {data['pool_case'][:8]}…: `cpu_quick` on 8 painted slices "
        f"({data['cpu_quick_train_s']:.0f} s"
        f"{'; its masks refined by the pretrained decoder, two passes' if 'cpu_quick_one_pass_warm' in summary else ''}"
        "), `decoder_refine` (the study's configuration, presence head and "
        f"refinement) on the whole volume ({data['decoder_refine_train_s']:.0f} s). *Cold* = no embedding of the "
        "volume stored yet; *warm* = its embeddings are in the store (segmenting it again, another model, "
        "the effect after the panel).",
        "",
        "| run | volumes | median seconds | mean slices segmented | mean slices encoded | mean Dice "
        "| Dice change vs every slice: mean / worst |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, label in _VARIANTS.items():
        row = summary.get(key)
        if not row:
            continue
        change = ""
        if "mean_dice_change_vs_full" in row and "search" in key:
            change = f"{row['mean_dice_change_vs_full']:+.4f} / {row['worst_dice_change_vs_full']:+.4f}"
        if "mean_dice_change_int8" in row:
            change = (
                f"int8 vs fp32: {row['mean_dice_change_int8']:+.4f} / {row['worst_dice_change_int8']:+.4f}, "
                f"{row['median_speedup_int8']:.2f}× the speed"
            )
        if "mean_dice_change_fp16_store" in row:
            change = (
                f"store vs float32: {row['mean_dice_change_fp16_store']:+.4f} / "
                f"{row['worst_dice_change_fp16_store']:+.4f}"
            )
        lines.append(
            f"| {label} | {row['volumes']} | {row['median_s']:.1f} | {row.get('mean_segmented', 88):.1f} "
            f"| {row.get('mean_encoded', 88):.1f} | {row['mean_dice']:.3f} | {change or '–'} |"
        )
    cold = summary.get("cold", {}).get("median_s")
    warm = summary.get("decoder_refine_warm", {}).get("median_s")
    if cold and warm:
        lines += [
            "",
            f"**Goals on this machine**: cold ≤ {COLD_GOAL_S:.0f} s — "
            f"{'met' if cold <= COLD_GOAL_S else 'not met'} (median {cold:.1f} s for every slice); "
            f"warm ≤ {WARM_GOAL_S:.0f} s — {'met' if warm <= WARM_GOAL_S else 'not met'} (median {warm:.1f} s for "
            f"every slice, {cold / warm:.0f}× faster than cold).",
        ]
    lines += _int8_decoder_lines(data)
    if "store_bytes" in data:
        lines += ["", f"The store held {data['store_bytes'] / 2**20:.0f} MB for {len(volumes) + 1} volumes "
                      "(float16, 2 MB per slice)."]  # fmt: skip
    return [*lines, ""]


def _int8_decoder_lines(data: dict[str, Any]) -> list[str]:
    """Per model: the int8 decoder's Dice change on each held-out volume against the bar."""
    volumes = data.get("volumes", {})
    lines = []
    for model in ("decoder_refine", "cpu_quick"):
        changes = [row[f"{model}_int8_warm"]["dice_change_int8"] for row in volumes.values()
                   if f"{model}_int8_warm" in row]  # fmt: skip
        if not changes:
            continue
        failing = sum(abs(c) > INT8_BAR for c in changes)
        verdict = (
            f"within the bar of {INT8_BAR} on all {len(changes)} volumes"
            if not failing
            else f"beyond the bar of {INT8_BAR} on {failing} of {len(changes)} volumes"
        )
        lines.append(
            f"- `{model}` with the int8 decoder ({data.get('int8_decoders', {}).get(model, 'onnxruntime int8')}), "
            f"every slice: Dice change per volume {', '.join(f'{c:+.4f}' for c in changes)} — {verdict}."
        )
    if lines:
        lines = ["", "**The int8 mask decoder** (`--decoder-precision int8`) against fp32 on the same slices:", "",
                 *lines]  # fmt: skip
    return lines + _per_volume_table(volumes)


#: Per-volume Dice changes: (column, variant, key of the change).
_LEVERS = (
    ("`decoder_refine` search 4", "decoder_refine_warm_search4", "dice_change_vs_full"),
    ("`decoder_refine` search 8", "decoder_refine_warm_search8", "dice_change_vs_full"),
    ("`decoder_refine` int8", "decoder_refine_int8_warm", "dice_change_int8"),
    ("`cpu_quick` search 8", "cpu_quick_warm_search8", "dice_change_vs_full"),
    ("`cpu_quick` int8", "cpu_quick_int8_warm", "dice_change_int8"),
)


def _per_volume_table(volumes: dict[str, Any]) -> list[str]:
    """Each held-out volume: its Dice with every slice, and the Dice change each lever made on it."""
    levers = [lever for lever in _LEVERS if any(lever[1] in row for row in volumes.values())]
    if not levers:
        return []
    lines = ["", "Dice change per held-out volume (warm; against the same model on every slice in fp32):", "",
             "| volume | `decoder_refine` Dice | " + " | ".join(c for c, _, _ in levers) + " |",
             "|---|---|" + "---|" * len(levers)]  # fmt: skip
    for case, row in volumes.items():
        cells = [f"{row[v][k]:+.4f}" if v in row else "–" for _, v, k in levers]
        lines.append(f"| {case[:8]}… | {row['decoder_refine_warm']['dice']:.3f} | " + " | ".join(cells) + " |")
    return lines


def int8_section(int8: dict[str, Any], real: dict[str, Any] | None) -> list[str]:
    lines = [
        "### Reduced precision: int8 image encoders (ONNX Runtime quantisation)",
        "",
        f"Calibration on {int8['calibration_slices']} slices of another volume; "
        "the error is ‖int8 − fp32‖ / ‖fp32‖ of the embedding on slices of the held-out volume.",
        "",
        "| encoder | seconds per slice | speed-up vs fp32 | relative embedding error | Dice (cpu_quick, held-out "
        "volume) | Dice change vs fp32 (bar: 0.005) |",
        "|---|---|---|---|---|---|",
        f"| ONNX Runtime fp32 | {int8['fp32']['s_per_slice']:.3f} | 1.00× | 0 | {real['onnxruntime']['dice']:.4f} | – |"
        if real
        else f"| ONNX Runtime fp32 | {int8['fp32']['s_per_slice']:.3f} | 1.00× | 0 | – | – |",
    ]
    labels = {
        "dynamic_matmul_per_channel": "int8 dynamic (MatMul, per-channel weights)",
        "static_gemm_only": "int8 static QDQ, Gemm only (calibrated)",
        "static_all": "int8 static QDQ, every op (calibrated)",
    }
    dices = (real or {}).get("int8_dice", {})
    for key, label in labels.items():
        row = int8.get(key)
        if not row:
            continue
        seen = dices.get(key)
        lines.append(
            f"| {label} | {row['s_per_slice']:.3f} | {row['speedup_vs_fp32']:.2f}× "
            f"| {row['relative_embedding_error']:.3f} | {seen['dice']:.4f} | {seen['dice_change_vs_fp32']:+.4f} |"
            if seen
            else f"| {label} | {row['s_per_slice']:.3f} | {row['speedup_vs_fp32']:.2f}× "
            f"| {row['relative_embedding_error']:.3f} | – | – |"
        )
    return [*lines, ""]


def scaling_section(data: dict[str, Any], images: Path, link: str, machine_line: Any) -> list[str]:
    points = data["points"]
    lines = [
        "## Scaling: time and peak memory against the slices and the in-plane size",
        "",
        f"`benchmarks/bench_scaling.py` — each point in its own process. Machine: {machine_line(data['machine'])}. "
        "Prediction: pretrained LiteMedSAM, automatic, every slice encoded, no embedding store. Training: "
        "`cpu_quick`, one epoch on one fully labelled phantom (embedding cache, then the steps), no store.",
        "",
        'Memory is the process\'s own high-water mark (`VmHWM`); "above the input" subtracts what it held once '
        "the libraries were imported and the phantom file was read.",
        "",
        "| task | slices × in-plane | seconds | seconds per slice | peak resident memory (MB) "
        "| of which above the input |",
        "|---|---|---|---|---|---|",
    ]
    for p in points:
        lines.append(
            f"| {p['task']} | {p['slices']} × {p['side']}² | {p['s']:.1f} | {p['s_per_slice']:.2f} "
            f"| {p['peak_rss_mb']:.0f} | {p['peak_rss_mb'] - p['rss_after_imports_mb']:.0f} |"
        )
    _scaling_plot(points, images / "scaling.png")
    lines += ["", f"![Time and peak memory against the slices]({link}/scaling.png)", ""]
    return lines


def _scaling_plot(points: list[dict[str, Any]], path: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(8.0, 3.2), dpi=120)
    for task, colour in (("predict", "#4c72b0"), ("train", "#dd8452")):
        rows = sorted((p for p in points if p["task"] == task and p["side"] == 256), key=lambda p: p["slices"])
        if not rows:
            continue
        x = [p["slices"] for p in rows]
        left.plot(x, [p["s"] for p in rows], "o-", color=colour, label=task)
        right.plot(x, [p["peak_rss_mb"] for p in rows], "o-", color=colour, label=task)
    left.set(xlabel="slices (256²)", ylabel="seconds", title="time")
    right.set(xlabel="slices (256²)", ylabel="peak resident MB", title="memory")
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def gpu_section(data: dict[str, Any] | None, machine_line: Any) -> list[str]:
    lines = ["## GPU", ""]
    if not data or data.get("smoke"):
        return [*lines, "No GPU was lent to the sessions that measured these figures, so there are no GPU figures "
                "yet. `benchmarks/bench_gpu.py` measures them in one run on a CUDA machine (whole-volume "
                "prediction with LiteMedSAM and SAM ViT-B at 1024², ViT-B encoder+decoder LoRA train steps with bf16 "
                "autocast, gradient checkpointing off and on, batch 1 and 4).", ""]  # fmt: skip
    lines += [f"`benchmarks/bench_gpu.py`. Machine: {machine_line(data['machine'])}.", "",
              "| prediction, 88 slices | seconds | per slice | peak GPU MB |", "|---|---|---|---|"]  # fmt: skip
    for key, row in data["prediction"].items():
        lines.append(f"| {key} | {row['s']:.2f} | {row['s_per_slice']:.3f} | {row['peak_mb'] or 0:.0f} |")
    lines += ["", "| ViT-B 1024² encoder+decoder LoRA train step | seconds | peak GPU MB |", "|---|---|---|"]
    for key, row in data.get("training", {}).items():
        lines.append(f"| {key} | {row['step_s']:.3f} | {row['peak_mb'] or 0:.0f} |")
    return [*lines, ""]


def decoder_section(data: dict[str, Any], machine_line: Any) -> list[str]:
    rows = data["s_per_slice"]

    def ms(name: str) -> str:
        again = rows.get(f"{name}_again")
        return f"{1000 * rows[name]:.1f}" + (f" / {1000 * again:.1f}" if again is not None else "")

    lines = [
        "## The mask decoder: where warm time goes, and batching slices",
        "",
        f"`benchmarks/bench_decoder.py` — LiteMedSAM's prompt encoder and mask decoder, milliseconds per slice "
        f"(median over {data['slices_per_call']} random embeddings per call; ONNX rows measured twice, interleaved). "
        f"Machine: {machine_line(data['machine'])}.",
        "",
        "| decoder | automatic (no prompt) | one box |",
        "|---|---|---|",
        f"| ONNX Runtime, one slice at a time (the product) | {ms('onnx_automatic_batch1')} "
        f"| {ms('onnx_box_batch1')} |",
        f"| ONNX Runtime, exported for 8 slices, 8 at a time | {ms('onnx_automatic_batch8')} "
        f"| {ms('onnx_box_batch8')} |",
        f"| PyTorch, one slice at a time | {ms('torch_automatic_batch1')} | – |",
        f"| PyTorch, 8 at a time | {ms('torch_automatic_batch8')} | – |",
        "",
        f"Batching 8 slices through ONNX Runtime: {data['batch8_speedup']['automatic']:.2f}× (automatic) and "
        f"{data['batch8_speedup']['box']:.2f}× (box) the speed of one at a time (largest difference in the logits "
        f"{data['batch8_max_abs_diff']:.1e}). A warm 88-slice prediction (256 × 256 phantom, every embedding "
        f"stored, one automatic pass per slice) took {data['warm_88_slices_s']:.2f} s, "
        f"{100 * data['decoder_share_of_warm']:.0f} % of it the decoder (88 × its time per slice).",
        "",
    ]
    if "spinning_off_speedup" in data:
        lines += [
            "A refined slice (one automatic pass and two box passes, in two sessions as the fine-tuned and the "
            f"pretrained decoder are): {ms('onnx_refined_slice_spinning')} ms with ONNX Runtime's threads spinning "
            f"after each run (its default), {ms('onnx_refined_slice_not_spinning')} ms without (the product's "
            f"setting since 2026-12-04): {data['spinning_off_speedup']:.2f}×. One session's spinning threads hold "
            "the cores the next session needs.",
            "",
        ]
    if "cold_88_slices_s" in data:
        cold = data["cold_88_slices_s"]
        lines += [
            "A cold 88-slice prediction of the phantom (pretrained model, no store: every slice encoded, then "
            f"decoded): {' / '.join(f'{s:.1f}' for s in cold['spinning'])} s spinning, "
            f"{' / '.join(f'{s:.1f}' for s in cold['not_spinning'])} s not (interleaved runs).",
            "",
        ]
    return lines
