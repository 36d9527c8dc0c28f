"""Prediction speed: the image-encoder levers and whole-volume automatic prediction, on this machine.

Measured in one process (medians of ``--repeats``; ratios from the same run):

* image encoder per 256x256 slice (LiteMedSAM): PyTorch fp32 at batch 1 and 4, bf16 autocast,
  ``torch.compile`` (inductor; with its first-call compile time), channels-last, ONNX Runtime fp32
  (the product's ``runtime="onnxruntime"``: export and cached-load time too), and with
  ``--openvino`` OpenVINO fp32 for comparison (not used by the product: importing it sends Intel a
  usage event); the largest difference of each from PyTorch fp32's embedding;
* mask decoder per slice (automatic mode);
* whole-volume automatic prediction of an 88-slice 256x256 volume, end to end (``predict_volume``),
  with the PyTorch and ONNX Runtime encoders (a pretrained model finds nothing, so slice search would
  stop after the samples: this figure is the full pass);
* with ``--data`` (la_heart_dev, never copied): a ``cpu_quick`` model trained on 8 painted slices
  of the first volume segments the last volume (88 slices) with PyTorch, ONNX Runtime, and ONNX
  Runtime + slice search (steps 4 and 8): time, Dice against the reference, Dice change from PyTorch;
* the encoder's floating-point operations per slice and this machine's fp32 matrix-multiply
  throughput, i.e. how fast the encoder could at best run here;
* peak resident memory.

``--int8-only`` measures the int8 encoders alone (``prediction_int8.json``: the report's int8 table).

    .venv/bin/python benchmarks/bench_prediction.py --data ../shared/data/la_heart_dev \\
        --json benchmarks/results/prediction_cpu.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import (
    AXIS,
    case_ids,
    load_case,
    machine,
    masks_from_embeddings,
    median_seconds,
    painted_case,
    peak_rss_mb,
    write_results,
)

from samtune.data import Volume
from samtune.metrics import dice
from samtune.models import build_model
from samtune.models.runtime import encoder_runtime
from samtune.predict import PredictConfig, predict_volume
from samtune.privacy import onnxruntime_module
from samtune.train import fine_tune, load_preset


def encoder_levers(model: Any, repeats: int, quick: bool, openvino: bool) -> dict[str, Any]:
    size = model.input_size
    x1 = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    x4 = x1.repeat(4, 1, 1, 1)
    encoder = model.image_encoder
    rows: dict[str, Any] = {}
    with torch.no_grad():
        reference = encoder(x1)

        def row(name: str, fn: Any, per: int = 1, n: int = repeats, warmup: bool = True) -> None:
            seconds = median_seconds(fn, n, warmup=warmup) / per
            out = fn()[:1].float()
            rows[name] = {"s_per_slice": seconds, "max_abs_diff": float((out - reference).abs().max())}
            print(f"encoder {name}: {seconds:.3f} s/slice", flush=True)

        row("torch_fp32", lambda: encoder(x1))
        row("torch_fp32_batch4", lambda: encoder(x4), per=4)
        if not quick:  # emulated without AVX-512 BF16: ~50 s per slice on the development machine
            with torch.autocast("cpu", dtype=torch.bfloat16):
                row("torch_bf16_autocast", lambda: encoder(x1), n=1, warmup=False)
        if not quick:  # inductor compiles C++ kernels first: minutes on 2 cores
            try:
                started = time.perf_counter()
                compiled = torch.compile(encoder)
                compiled(x1)
                rows["torch_compile_first_call_s"] = time.perf_counter() - started
                row("torch_compile", lambda: compiled(x1))
            except Exception as error:  # a missing compiler or an unsupported operation: record why
                rows["torch_compile"] = f"failed: {type(error).__name__}: {str(error)[:200]}"
        encoder.to(memory_format=torch.channels_last)
        row("torch_channels_last", lambda: encoder(x1.contiguous(memory_format=torch.channels_last)))
        encoder.to(memory_format=torch.contiguous_format)
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            runtime = encoder_runtime(model, "onnxruntime", cache_dir=folder)
            rows["onnxruntime_export_s"] = time.perf_counter() - started
            started = time.perf_counter()
            encoder_runtime(model, "onnxruntime", cache_dir=folder)
            rows["onnxruntime_load_cached_s"] = time.perf_counter() - started
            row("onnxruntime_fp32", lambda: runtime(x1))
            if openvino:  # measured for comparison only: `import openvino` sends a usage event to Intel
                import openvino as ov

                (onnx_file,) = Path(folder).glob("*/encoder.onnx")
                config = {"INFERENCE_NUM_THREADS": torch.get_num_threads(), "INFERENCE_PRECISION_HINT": "f32"}
                compiled = ov.Core().compile_model(ov.Core().read_model(str(onnx_file)), "CPU", config)
                row("openvino_fp32", lambda: torch.from_numpy(compiled(x1.numpy())[0]))
        row("torch_fp32_again", lambda: encoder(x1))  # the baseline once more: drift over the run shows here
        embedding = encoder(x1)
        rows["decoder_s_per_slice"] = median_seconds(lambda: model.decode(embedding), repeats)
    base = rows["torch_fp32"]["s_per_slice"]
    for value in rows.values():
        if isinstance(value, dict):
            value["speedup_vs_torch_fp32"] = base / value["s_per_slice"]
    return rows


def int8_levers(model: Any, data: Path | None, repeats: int) -> dict[str, Any]:
    """ONNX Runtime int8 encoders (dynamic on the matrix products; static QDQ with calibration) vs fp32.

    Calibration slices come from the first la_heart_dev volume with ``--data`` (else an MR phantom);
    the figures are time per slice, the relative error of the embedding on slices of the last
    volume (another phantom without data) and, with ``--data``, the Dice change a ``cpu_quick``
    model sees on that whole volume (``int8_dice``, filled in by :func:`real_volume`).
    """
    ort = onnxruntime_module()  # telemetry off before the first import
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from samtune.data import make_phantom, prepare_slices

    def inputs(volume: Volume, step: int) -> np.ndarray:
        indices = list(range(2, volume.shape[0] - 2, step))
        images, _ = prepare_slices(volume, input_size=model.input_size, pixel_norm=model.pixel_norm,
                                   config=_axis(), indices=indices)  # fmt: skip
        return images.numpy()

    if data is not None:
        ids = case_ids(data)
        calibration, evaluation = inputs(load_case(data, ids[0])[0], 6), inputs(load_case(data, ids[-1])[0], 20)
    else:
        calibration = inputs(make_phantom(shape=(88, 256, 256), seed=5)[0], 6)
        evaluation = inputs(make_phantom(shape=(88, 256, 256), seed=6)[0], 20)
    folder = Path(tempfile.mkdtemp(prefix="samtune-int8-"))
    fp32 = folder / "fp32.onnx"
    with tempfile.TemporaryDirectory() as export:
        encoder_runtime(model, "onnxruntime", cache_dir=export)
        (exported,) = Path(export).glob("*/encoder.onnx")
        quant_pre_process(str(exported), str(fp32))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"images": x[None]} for x in calibration])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    static = {"quant_format": QuantFormat.QDQ, "per_channel": True, "activation_type": QuantType.QUInt8,
              "weight_type": QuantType.QInt8}  # fmt: skip
    variants = {
        "dynamic_matmul_per_channel": lambda out: quantize_dynamic(
            str(fp32), str(out), per_channel=True, weight_type=QuantType.QInt8
        ),  # fmt: skip
        "static_gemm_only": lambda out: quantize_static(
            str(fp32), str(out), Reader(), op_types_to_quantize=["Gemm"], **static
        ),  # fmt: skip
        "static_all": lambda out: quantize_static(str(fp32), str(out), Reader(), **static),
    }
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1

    def session(path: Path) -> Any:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    reference_session = session(fp32)
    reference = [reference_session.run(None, {"images": x[None]})[0] for x in evaluation]
    x1 = evaluation[:1]
    base = median_seconds(lambda: reference_session.run(None, {"images": x1}), repeats)
    rows: dict[str, Any] = {"fp32": {"s_per_slice": base}, "calibration_slices": len(calibration)}
    sessions = {}
    for name, make in variants.items():
        out = folder / f"{name}.onnx"
        started = time.perf_counter()
        make(out)
        built = time.perf_counter() - started
        quantized = session(out)
        sessions[name] = quantized
        got = [quantized.run(None, {"images": x[None]})[0] for x in evaluation]
        error = float(np.mean([np.linalg.norm(g - r) / np.linalg.norm(r) for g, r in zip(got, reference)]))
        seconds = median_seconds(lambda q=quantized: q.run(None, {"images": x1}), repeats)
        rows[name] = {"s_per_slice": seconds, "speedup_vs_fp32": base / seconds, "relative_embedding_error": error,
                      "quantize_s": built}  # fmt: skip
        print(f"int8 {name}: {seconds:.3f} s/slice ({base / seconds:.2f}x), embedding error {error:.3f}", flush=True)
    rows["sessions"] = sessions  # used by real_volume, dropped before writing
    return rows


def compute_bound(model: Any) -> dict[str, float]:
    """Encoder FLOPs per slice and this machine's fp32 matrix-multiply throughput (a practical peak)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, model.input_size, model.input_size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.image_encoder(x)
    flops = float(counter.get_total_flops())  # multiply-adds count 2
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    seconds = median_seconds(lambda: a @ b, 5)
    gflops = 2 * 2048**3 / seconds / 1e9
    return {
        "encoder_gflop_per_slice": flops / 1e9,
        "matmul_gflops": gflops,
        "encoder_s_per_slice_at_matmul_speed": flops / 1e9 / gflops,
        "volume_88_encoder_s_at_matmul_speed": 88 * flops / 1e9 / gflops,
    }


def whole_volume(model: Any, repeats: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    volume = Volume.from_array(rng.normal(size=(88, 256, 256)).astype(np.float32), spacing=(0.625, 0.625, 0.625))
    out: dict[str, Any] = {}
    for runtime in ("torch", "onnxruntime"):
        config = PredictConfig(runtime=runtime, slices=_axis())
        out[f"{runtime}_s"] = median_seconds(
            lambda config=config: predict_volume(model, volume, config, store=False), repeats, warmup=False
        )
        print(f"synthetic 88x256x256 {runtime}: {out[f'{runtime}_s']:.1f} s", flush=True)
    out["speedup"] = out["torch_s"] / out["onnxruntime_s"]
    return out


def _axis() -> Any:
    from samtune.data.pipeline import SliceConfig

    return SliceConfig(axis=AXIS)


def real_volume(data: Path, int8: dict[str, Any] | None = None, *, int8_only: bool = False) -> dict[str, Any]:
    ids = case_ids(data)
    case, painted = painted_case(ids[0], *load_case(data, ids[0]), 8)
    config = load_preset("cpu_quick").train_config(
        {"device": "cpu", "seed": 0, "val_fraction": 0.0, "slices": {"axis": AXIS}}
    )
    started = time.perf_counter()
    outcome = fine_tune([case], config)
    model = outcome.model.eval()
    result: dict[str, Any] = {"train_case": ids[0], "painted": painted, "train_s": time.perf_counter() - started}
    image, label = load_case(data, ids[-1])
    reference = label.array == 1
    result["test_case"] = ids[-1]
    masks = {}
    variants = [("onnxruntime", "onnxruntime", 0)]
    if not int8_only:
        variants = [("torch", "torch", 0), *variants]
        variants += [("onnxruntime_search4", "onnxruntime", 4), ("onnxruntime_search8", "onnxruntime", 8)]
    for name, runtime, search in variants:
        encoder_runtime(model, runtime)  # conversion (cached after the first call) is not part of the figure
        config = PredictConfig(runtime=runtime, slice_search=search, slices=_axis())
        started = time.perf_counter()
        masks[name] = predict_volume(model, image, config, store=False).array > 0
        seconds = time.perf_counter() - started
        result[name] = {"s": seconds, "dice": dice(masks[name], reference)}
        print(f"la_heart {ids[-1]} {name}: {seconds:.1f} s, Dice {result[name]['dice']:.4f}", flush=True)
    if int8:  # what users see: the Dice of the same model with each int8 encoder, every slice
        from samtune.data import prepare_slices

        images, grid = prepare_slices(image, input_size=model.input_size, pixel_norm=model.pixel_norm, config=_axis())
        result["int8_dice"] = {}
        for name, session in int8.items():
            embeddings = [torch.from_numpy(session.run(None, {"images": x[None].numpy()})[0]) for x in images]
            mask = masks_from_embeddings(model, torch.cat(embeddings), grid)  # slices along k: the array's axis 0
            value = dice(mask, reference)
            result["int8_dice"][name] = {"dice": value, "dice_change_vs_fp32": value - result["onnxruntime"]["dice"]}
            print(f"la_heart {ids[-1]} int8 {name}: Dice {value:.4f}", flush=True)
    for name in () if int8_only else ("onnxruntime", "onnxruntime_search4", "onnxruntime_search8"):
        result[name]["dice_change_vs_torch"] = result[name]["dice"] - result["torch"]["dice"]
        result[name]["voxels_differing_from_torch"] = int((masks[name] != masks["torch"]).sum())
        result[name]["speedup_vs_torch"] = result["torch"]["s"] / result[name]["s"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per encoder figure (median)")
    parser.add_argument("--volume-repeats", type=int, default=1, help="repeats of each whole-volume run")
    parser.add_argument("--threads", type=int, default=2, help="torch (and OpenVINO) CPU threads")
    parser.add_argument("--data", type=Path, help="la_heart_dev folder for the real-volume figures")
    parser.add_argument("--quick", action="store_true", help="2 repeats, no bf16, no whole synthetic volume")
    parser.add_argument(
        "--int8-only", action="store_true",
        help="only the int8 encoders: time, embedding error, and (with --data) the Dice change on the held-out volume",
    )  # fmt: skip
    parser.add_argument("--openvino", action="store_true", help="also time OpenVINO (sends Intel a usage event)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    if args.quick:
        args.repeats = 2
    torch.set_num_threads(args.threads)
    model = build_model("litemedsam", device="cpu")
    figures: dict[str, Any] = {"machine": machine(args.threads), "backbone": "litemedsam", "quick": args.quick}
    if not args.int8_only:
        figures["encoder"] = encoder_levers(model, args.repeats, args.quick, args.openvino)
        figures["compute_bound"] = compute_bound(model)
    int8 = int8_levers(model, args.data, args.repeats)
    sessions = int8.pop("sessions")
    figures["int8_encoder"] = int8
    if not args.quick and not args.int8_only:
        figures["synthetic_volume_88x256x256"] = whole_volume(model, args.volume_repeats)
    if args.data:
        figures["la_heart_volume"] = real_volume(args.data, sessions, int8_only=args.int8_only)
    figures["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(figures, indent=2))
    write_results(args.json, figures)


if __name__ == "__main__":
    main()
