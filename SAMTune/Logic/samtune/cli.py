"""The ``samtune`` command line: ``models``, ``predict`` and ``demo``.

Exit codes: 0 success, 1 internal error, 2 bad option or configuration, 3 bad input data,
4 missing or corrupt weights, 5 device not available, 6 output cannot be written,
7 training diverged (NaN loss), 8 out of memory.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from samtune import __version__
from samtune.cli_progress import ProgressBar
from samtune.errors import ConfigurationError, OutputError, SAMTuneError

EXIT_CODES = {
    "internal": 1,
    "configuration": 2,
    "data": 3,
    "weights": 4,
    "device": 5,
    "output": 6,
    "diverged": 7,
    "out_of_memory": 8,
}

OUTPUT_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".seg.nrrd", ".mha", ".mhd")


def _slice_range(text: str) -> tuple[int, int]:
    try:
        start, stop = text.split(":")
        return int(start), int(stop)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected START:STOP slice indices (stop exclusive), e.g. 10:40; got '{text}'"
        ) from None


def _add_predict_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="segment a volume or 2D image with a SAM backbone (automatic or prompted)",
        description=(
            "Segment a volume slice by slice and write a label map with the input's geometry. "
            "Without --box/--point the model runs in automatic (prompt-free) mode, which needs a "
            "fine-tuned model; pretrained backbones need prompts."
        ),
    )
    p.add_argument(
        "--image",
        required=True,
        type=Path,
        help="input image: NIfTI, NRRD, MHA, a DICOM folder, PNG/JPEG/BMP",
    )
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        help=f"output label map ({', '.join(OUTPUT_SUFFIXES)}); its folder must exist",
    )
    p.add_argument("--model", default="litemedsam", help="backbone name (see `samtune models`); default litemedsam")
    p.add_argument("--weights", type=Path, help="weights file for the backbone (overrides the bundled/cached one)")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    p.add_argument(
        "--box",
        action="append",
        nargs=6,
        type=float,
        metavar=("I0", "J0", "K0", "I1", "J1", "K1"),
        help="3D box in voxel indices (inclusive), applied on every slice it covers; repeatable",
    )
    p.add_argument(
        "--point",
        action="append",
        nargs=3,
        type=float,
        metavar=("I", "J", "K"),
        help="positive point (inside the structure) in voxel indices; repeatable",
    )
    p.add_argument(
        "--neg-point",
        action="append",
        nargs=3,
        type=float,
        metavar=("I", "J", "K"),
        help="negative point (outside the structure) in voxel indices; repeatable",
    )
    p.add_argument("--axis", default="auto", help="slice axis: auto (largest spacing), k, j or i")
    p.add_argument("--slices", type=_slice_range, help="only slices START:STOP along the slice axis")
    p.add_argument("--threshold", type=float, default=0.5, help="foreground probability threshold (default 0.5)")
    p.add_argument("--batch-size", type=int, default=1, help="slices per batch (default 1; larger pays on a GPU)")
    p.add_argument(
        "--intensity",
        default="auto",
        help="intensity normalisation: auto, ct, percentile (0.5-99.5), window, none (default auto)",
    )
    p.add_argument("--ct-preset", default="soft_tissue", help="CT window preset for --intensity ct")
    p.add_argument(
        "--window",
        nargs=2,
        type=float,
        metavar=("LOW", "HIGH"),
        help="explicit window for --intensity window",
    )
    p.add_argument("--two-and-half-d", action="store_true", help="use slices z-1, z, z+1 as the three channels")
    p.add_argument("--label-value", type=int, default=1, help="value written for the structure (default 1)")
    p.add_argument("--name", default="Segment_1", help="segment name stored in a .seg.nrrd output")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_predict)


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser(
        "train",
        help="fine-tune a backbone on labelled cases with a preset; writes a model folder",
        description=(
            "Fine-tune SAM on the cases of a training manifest with a preset, and write the model folder "
            "(trainable weights + model card). Every preset field can be overridden with --set."
        ),
    )
    t.add_argument("--preset", required=True, help="preset name (see `samtune presets`)")
    t.add_argument("--train-manifest", required=True, type=Path, help="training-data manifest (JSON)")
    t.add_argument("--out", required=True, type=Path, help="model folder to create (must not exist)")
    t.add_argument("--structure", help="structure to learn when the manifest has several")
    t.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a preset field, e.g. --set epochs=5 --set finetune.lora.rank=8 (VALUE is JSON)",
    )
    t.add_argument("--weights", type=Path, help="weights file of the backbone")
    t.add_argument("--device", help="override the preset's device: auto, cpu, cuda, cuda:N, mps")
    t.add_argument("--seed", type=int, help="override the random seed")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_cmd_train)


def parse_overrides(items: Sequence[str]) -> dict[str, object]:
    """``["a.b=1", "c=\"x\""]`` -> ``{"a": {"b": 1}, "c": "x"}`` (values parsed as JSON, else text)."""
    import json

    out: dict[str, object] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigurationError(f"--set expects KEY=VALUE, got '{item}'.")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})  # type: ignore[assignment]
        node[parts[-1]] = value
    return out


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``samtune`` command."""
    parser = argparse.ArgumentParser(
        prog="samtune",
        description="Fine-tune and run the Segment Anything Model on medical images.",
    )
    parser.add_argument("--version", action="version", version=f"samtune {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    m = sub.add_parser(
        "models",
        help="list the backbones, their input sizes and whether their weights are present",
        description="List the backbones, their input sizes, where their weights are and whether present.",
    )
    m.set_defaults(func=_cmd_models)

    _add_predict_parser(sub)
    _add_train_parser(sub)

    pr = sub.add_parser(
        "presets",
        help="list the fine-tuning presets with their description and when to use them",
        description="List the fine-tuning presets: name, backbone, method, description and when to use each.",
    )
    pr.add_argument("--json", action="store_true", help="print the presets (with their full configuration) as JSON")
    pr.set_defaults(func=_cmd_presets)

    d = sub.add_parser(
        "demo",
        help="zero-shot LiteMedSAM on a synthetic phantom; prints Dice",
        description=(
            "Build a synthetic MR phantom, segment it with the bundled LiteMedSAM in automatic mode and "
            "with box prompts taken from the phantom's label, and print Dice for both."
        ),
    )
    d.add_argument("--out-dir", type=Path, help="also write the phantom, its label and the predictions here")
    d.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    d.add_argument("--seed", type=int, default=0, help="phantom seed (default 0)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=_cmd_demo)
    return parser


def check_output_path(path: Path) -> None:
    """Fail early, before any computation, when ``path`` cannot be written.

    Raises:
        OutputError: Unsupported suffix or missing parent folder.
    """
    name = path.name.lower()
    if not name.endswith(OUTPUT_SUFFIXES):
        raise OutputError(f"Cannot write '{path}': unsupported file type. Use one of {', '.join(OUTPUT_SUFFIXES)}.")
    if not path.parent.is_dir():
        raise OutputError(f"Cannot write '{path}': the folder '{path.parent}' does not exist. Create it first.")


def _cmd_models(args: argparse.Namespace) -> int:
    from samtune.models import list_backbones, weights_status

    rows = [("name", "input", "weights", "where")]
    for spec in list_backbones():
        present, path, _verified = weights_status(spec)
        state = "bundled" if spec.bundled else ("present" if present else "missing")
        where = str(path) if path else "not found: use --weights FILE or download it"
        rows.append((spec.name, f"{spec.input_size}x{spec.input_size}", state, where))
    widths = [max(len(r[c]) for r in rows) for c in range(3)]
    for r in rows:
        print(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from samtune.data import IntensityConfig, SliceConfig, read_volume, resolve_axis, write_label
    from samtune.models import build_model, get_backbone, resolve_device
    from samtune.predict import PredictConfig, box_prompts_from_ijk, merge_prompts, point_prompts_from_ijk

    check_output_path(args.out)
    trained = Path(args.model).is_dir()
    if not trained:
        get_backbone(args.model)  # an unknown name fails before any reading
    intensity = IntensityConfig(
        mode=args.intensity,
        ct_preset=args.ct_preset,
        window_low=args.window[0] if args.window else None,
        window_high=args.window[1] if args.window else None,
    )
    slices = SliceConfig(axis=args.axis, intensity=intensity, two_and_half_d=args.two_and_half_d)
    config = PredictConfig(
        threshold=args.threshold,
        batch_size=args.batch_size,
        slice_range=args.slices,
        slices=slices,
        label_value=args.label_value,
    )
    device = resolve_device(args.device)
    image = read_volume(args.image)
    axis = resolve_axis(image, slices.axis)
    prompts = None
    if args.box or args.point or args.neg_point:
        maps = []
        if args.box:
            maps.append(box_prompts_from_ijk(args.box, axis=axis, shape=image.shape))
        points = (args.point or []) + (args.neg_point or [])
        labels = [1] * len(args.point or []) + [0] * len(args.neg_point or [])
        if points:
            maps.append(point_prompts_from_ijk(points, labels, axis=axis))
        prompts = merge_prompts(*maps)
    if trained:
        from samtune.io.model_folder import load_trained_model

        model, card = load_trained_model(args.model, device=device, backbone_weights=args.weights)
        if args.name == "Segment_1":
            args.name = card.get("structure", args.name)
    else:
        model = build_model(args.model, weights=args.weights, device=device)
    mode = "prompted" if prompts is not None else "automatic"
    print(f"Segmenting {args.image} with {args.model} on {device} ({mode} mode)", file=sys.stderr)
    started = time.perf_counter()
    with ProgressBar("predict", enabled=not args.quiet) as bar:
        from samtune.predict import predict_volume

        label = predict_volume(model, image, config, prompts=prompts, progress=bar.update)
    n_fg = int((label.array != 0).sum())
    write_label(label, args.out, segment_names={args.name: args.label_value})
    print(
        f"Wrote {args.out} ({n_fg} foreground voxels) in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    if n_fg == 0 and prompts is None and not trained:
        print(
            "The prediction is empty: pretrained backbones segment nothing without prompts. "
            "Give --box or --point, or use a fine-tuned model.",
            file=sys.stderr,
        )
    return 0


def _cmd_presets(args: argparse.Namespace) -> int:
    import json

    from samtune.train.presets import list_presets

    presets = list_presets()
    if args.json:
        print(json.dumps([p.__dict__ for p in presets], indent=2))
        return 0
    for p in presets:
        config = p.train_config()
        print(f"{p.name}  ({config.backbone}, {config.finetune.method}, {config.finetune.scope})")
        print(f"    {p.description}")
        print(f"    When: {p.when_to_use}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from samtune.train.manifest import cases_from_manifest
    from samtune.train.presets import load_preset
    from samtune.train.run import fine_tune

    if args.out.exists() and any(args.out.iterdir()):
        raise OutputError(f"Model folder '{args.out}' already exists and is not empty. Choose a new --out.")
    if not args.out.parent.is_dir():
        raise OutputError(f"Cannot create '{args.out}': the folder '{args.out.parent}' does not exist.")
    overrides = parse_overrides(args.set)
    if args.device:
        overrides["device"] = args.device
    if args.seed is not None:
        overrides["seed"] = args.seed
    config = load_preset(args.preset).train_config(overrides)
    cases = cases_from_manifest(args.train_manifest, structure=args.structure)
    print(f"Training {args.preset} ({config.backbone}) on {len(cases)} case(s)", file=sys.stderr)
    with ProgressBar("train", enabled=not args.quiet) as bar:

        def on_event(event: dict[str, object]) -> None:
            if event["type"] == "progress":
                bar.update(int(event["step"]), int(event["total"]), str(event.get("stage", "")))  # type: ignore[call-overload]
            elif event["type"] == "metrics":
                shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in event.items() if k != "type"}
                print(f"\n{shown}" if bar.enabled else shown, file=sys.stderr)

        outcome = fine_tune(cases, config, out_dir=args.out, on_event=on_event, backbone_weights=args.weights)
    best = outcome.result.history[outcome.result.best_epoch - 1] if outcome.result.best_epoch else {}
    print(f"Wrote model {outcome.folder} (best epoch {outcome.result.best_epoch}: {best})", file=sys.stderr)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from samtune.demo import run_demo

    if args.out_dir is not None and not args.out_dir.is_dir():
        raise OutputError(f"--out-dir '{args.out_dir}' does not exist. Create it first.")
    run_demo(out_dir=args.out_dir, device=args.device, seed=args.seed, show_progress=not args.quiet)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``samtune`` command; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args))
    except SAMTuneError as error:
        print(f"samtune {args.command}: error: {error}", file=sys.stderr)
        return EXIT_CODES.get(error.kind, 1)
    except KeyboardInterrupt:
        print(f"samtune {args.command}: interrupted", file=sys.stderr)
        return 130


__all__ = ["ConfigurationError", "EXIT_CODES", "build_parser", "check_output_path", "main"]
