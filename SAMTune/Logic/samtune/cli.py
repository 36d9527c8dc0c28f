"""The ``samtune`` command line: ``models``, ``predict``, ``presets``, ``train``, ``evaluate``,
``manifest`` and ``demo``.

Exit codes: 0 success, 1 internal error, 2 bad option or configuration, 3 bad input data,
4 missing or corrupt weights, 5 device not available, 6 output cannot be written,
7 training diverged (NaN loss), 8 out of memory, 9 cancelled (resume with ``--resume``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from samtune import __version__
from samtune.cli_progress import ProgressBar
from samtune.errors import EXIT_CODES, ConfigurationError, OutputError, SAMTuneError
from samtune.jobs import OUTPUT_SUFFIXES, check_output_path
from samtune.quiet import quiet_third_party


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
        "--runtime",
        default="auto",
        choices=["auto", "torch", "onnxruntime"],
        help="image-encoder runtime: auto (ONNX Runtime on a CPU when installed, else PyTorch), torch, onnxruntime",
    )
    p.add_argument(
        "--slice-search",
        type=int,
        default=0,
        metavar="STEP",
        help="automatic mode: segment every STEP-th slice first, then only the slices around the structure "
        "(0 = every slice, the default)",
    )
    p.add_argument(
        "--largest-component",
        action="store_true",
        help="keep only the largest 3D connected component (one connected structure: removes stray islands)",
    )
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
    p.add_argument("--events", action="store_true", help="write JSON events on stdout (the worker protocol)")
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
    t.add_argument("--preset", help="preset name (see `samtune presets`); required unless --resume")
    t.add_argument("--train-manifest", type=Path, help="training-data manifest (JSON); required unless --resume")
    t.add_argument("--out", type=Path, help="model folder to create (must not exist); required unless --resume")
    t.add_argument(
        "--run-dir",
        type=Path,
        help="run folder: configuration, events, metrics, curve, checkpoints, log (default OUT.run)",
    )
    t.add_argument(
        "--resume",
        type=Path,
        metavar="RUN_DIR",
        help="continue a cancelled or interrupted run from its newest intact checkpoint",
    )
    t.add_argument("--structure", help="structure to learn when the manifest has several")
    t.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a preset field, e.g. --set epochs=5 --set finetune.lora.rank=8 (VALUE is JSON)",
    )
    t.add_argument("--weights", type=Path, help="weights file of the backbone")
    t.add_argument(
        "--device",
        help="override the preset's device: auto, cpu, cuda, cuda:N, mps (with --resume: continue on this device)",
    )
    t.add_argument("--seed", type=int, help="override the random seed")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--events", action="store_true", help="write JSON events on stdout (the worker protocol)")
    t.set_defaults(func=_cmd_train)


def _structure(text: str) -> tuple[str, int]:
    name, sep, value = text.rpartition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name, int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, e.g. 'left atrium=1'; got '{text}'") from None


def _add_evaluate_parser(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser(
        "evaluate",
        help="score predicted label maps against references: Dice, NSD and HD95 per case and structure",
        description=(
            "Compare predictions with reference label maps (pairs of files in order, or two folders matched by "
            "case name) and print foreground Dice, normalised surface Dice and HD95 (mm) per case and structure."
        ),
    )
    e.add_argument("--pred", nargs="+", required=True, type=Path, help="predicted label maps, or one folder")
    e.add_argument("--ref", nargs="+", required=True, type=Path, help="reference label maps, or one folder")
    e.add_argument(
        "--structure",
        action="append",
        type=_structure,
        metavar="NAME=VALUE",
        help="structure to score (repeatable); default every non-zero value of each reference",
    )
    e.add_argument("--tolerance-mm", type=float, default=1.0, help="NSD tolerance in mm (default 1.0)")
    e.add_argument("--csv", type=Path, help="also write the scores as CSV here")
    e.set_defaults(func=_cmd_evaluate)


def _add_manifest_parser(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser(
        "manifest",
        help="build a training manifest from image and label folders, or check one",
        description=(
            "Build a training-data manifest by matching label files to image files by name (case01.nii.gz with "
            "case01.nii.gz, case01_label.nii.gz, case01-seg.nrrd, ...), or check an existing one. Every problem "
            "(missing files, unreadable images, geometry mismatches, absent structures) is reported at once."
        ),
    )
    m.add_argument("--images", type=Path, help="folder of images (to build)")
    m.add_argument("--labels", type=Path, help="folder of label maps (to build)")
    m.add_argument("--out", type=Path, help="manifest file to write (to build)")
    m.add_argument(
        "--structure",
        action="append",
        type=_structure,
        metavar="NAME=VALUE",
        help="structure name and its label value (repeatable); default 'structure=1'",
    )
    m.add_argument("--fully-labelled", action="store_true", help="every slice of every case is ground truth")
    m.add_argument("--check", type=Path, metavar="MANIFEST", help="check this manifest instead of building one")
    m.set_defaults(func=_cmd_manifest)


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
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log details to stderr, including third-party library warnings"
    )
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
    _add_evaluate_parser(sub)
    _add_manifest_parser(sub)

    pr = sub.add_parser(
        "presets",
        help="list the fine-tuning presets with their description and when to use them",
        description="List the fine-tuning presets: name, backbone, method, description and when to use each.",
    )
    pr.add_argument("--json", action="store_true", help="print the presets (with their full configuration) as JSON")
    pr.set_defaults(func=_cmd_presets)

    d = sub.add_parser(
        "demo",
        help="fine-tune on synthetic phantoms and segment an unseen one; prints Dice before and after",
        description=(
            "SAMTune's main job in about three minutes on a CPU: make three labelled MR phantoms and an unseen "
            "test phantom, segment the test phantom with pretrained LiteMedSAM (automatically, and with a box "
            "per slice as the prompted reference), fine-tune with the cpu_quick preset, segment the test phantom "
            "automatically with the fine-tuned model, and print the three Dice scores."
        ),
    )
    d.add_argument(
        "--out-dir", type=Path, help="folder for the phantoms, the model and the predictions (default ./samtune-demo)"
    )
    d.add_argument("--epochs", type=int, default=20, help="training epochs (default 20)")
    d.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    d.add_argument("--seed", type=int, default=0, help="phantom seed (default 0)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=_cmd_demo)
    return parser


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


class TerminalEvents:
    """Shows job events on a terminal (progress bar, metrics and messages on stderr), or with
    ``--events`` writes them as protocol lines on stdout, as the worker does."""

    def __init__(self, label: str, *, quiet: bool, json_events: bool) -> None:
        self.json = None
        if json_events:
            from samtune.events import EventWriter

            self.json = EventWriter(sys.stdout)
        self.bar = ProgressBar(label, enabled=not quiet and not json_events)

    def __enter__(self) -> TerminalEvents:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)

    def __call__(self, event: dict[str, object]) -> None:
        if self.json is not None:
            self.json(event)
            return
        kind = event["type"]
        if kind == "progress":
            self.bar.update(int(event["step"]), int(event["total"]), str(event.get("stage", "")))  # type: ignore[call-overload]
        elif kind == "metrics":
            shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in event.items() if k != "type"}
            print(f"\n{shown}" if self.bar.enabled else shown, file=sys.stderr)
        elif kind == "log":
            print(("\n" if self.bar.enabled else "") + str(event["message"]), file=sys.stderr)


@contextlib.contextmanager
def _ending_events(args: argparse.Namespace, events: TerminalEvents, job: Any, *, stop: Any = None) -> Iterator[None]:
    """With ``--events``, end the stream with the protocol's ``cancelled`` or ``error`` event, as the worker does."""
    from samtune.jobs import record_final_event, terminal_event

    try:
        yield
    except SAMTuneError as error:
        final = terminal_event(error, job, signal=getattr(stop, "signal", None))
        record_final_event(job, final)
        if args.events:
            events(final)
        raise
    except Exception as error:  # as the worker: the protocol reports every failure
        if args.events:
            events({"type": "error", "kind": "internal", "exit_code": 1,
                    "message": f"Internal error: {type(error).__name__}: {error}."})  # fmt: skip
        raise


def _cmd_predict(args: argparse.Namespace) -> int:
    from samtune.jobs import PredictJob, run_predict_job

    job = PredictJob(
        image=str(args.image), out=str(args.out), model=str(args.model),
        weights=str(args.weights) if args.weights else None, device=args.device,
        box=[list(b) for b in args.box] if args.box else None,
        point=[list(p) for p in args.point] if args.point else None,
        neg_point=[list(p) for p in args.neg_point] if args.neg_point else None,
        axis=args.axis, slices=list(args.slices) if args.slices else None, threshold=args.threshold,
        batch_size=args.batch_size, runtime=args.runtime, slice_search=args.slice_search,
        largest_component=args.largest_component, intensity=args.intensity,
        window=list(args.window) if args.window else None,
        ct_preset=args.ct_preset, two_and_half_d=args.two_and_half_d, label_value=args.label_value, name=args.name,
    )  # fmt: skip
    from samtune.worker import StopFlag

    stop = StopFlag()
    stop.install()
    with TerminalEvents("predict", quiet=args.quiet, json_events=args.events) as events:

        def emit(event: dict[str, object]) -> None:
            if not args.events and event["type"] == "started":
                print(f"Segmenting {args.image} with {args.model} on {event['device']} ({event['mode']} mode)",
                      file=sys.stderr)  # fmt: skip
            elif not args.events and event["type"] == "finished":
                events.bar.__exit__()
                print(f"Wrote {args.out} ({event['foreground_voxels']} foreground voxels) in "
                      f"{float(event['seconds']):.1f} s", file=sys.stderr)  # type: ignore[arg-type]  # fmt: skip
            else:
                events(event)

        with _ending_events(args, events, job, stop=stop):
            run_predict_job(job, emit=emit, should_stop=stop)
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
    from samtune.jobs import TrainJob, load_run_job, run_train_job
    from samtune.worker import StopFlag

    if args.resume is not None:
        job = load_run_job(args.resume, device=args.device)
    else:
        missing = [name for name, value in (("--preset", args.preset), ("--train-manifest", args.train_manifest),
                                            ("--out", args.out)) if value is None]  # fmt: skip
        if missing:
            raise ConfigurationError(f"samtune train needs {', '.join(missing)} (or --resume RUN_DIR).")
        if not args.out.parent.is_dir():
            raise OutputError(f"Cannot create '{args.out}': the folder '{args.out.parent}' does not exist.")
        overrides = parse_overrides(args.set)
        if args.device:
            overrides["device"] = args.device
        if args.seed is not None:
            overrides["seed"] = args.seed
        run_dir = args.run_dir or args.out.with_name(args.out.name + ".run")
        job = TrainJob(
            manifest=str(args.train_manifest.resolve()), run_dir=str(run_dir.resolve()), preset=args.preset,
            overrides=overrides, structure=args.structure, model_dir=str(args.out.resolve()),
            weights=str(args.weights.resolve()) if args.weights else None,
        )  # fmt: skip
    stop = StopFlag()
    stop.install()
    with TerminalEvents("train", quiet=args.quiet, json_events=args.events) as events:

        def emit(event: dict[str, object]) -> None:
            if args.events:
                events(event)
            elif event["type"] == "started":
                print(f"Training {job.preset or 'custom'} ({event['backbone']}, {event['method']}) into "
                      f"{event['run_dir']}", file=sys.stderr)  # fmt: skip
            elif event["type"] == "finished":
                print(f"\nWrote model {event['model']} (best epoch {event['best_epoch']}: {event['metrics']})",
                      file=sys.stderr)  # fmt: skip
            else:
                events(event)

        try:
            with _ending_events(args, events, job, stop=stop):
                run_train_job(job, emit=emit, resume=args.resume is not None, should_stop=stop)
        except SAMTuneError as error:
            if error.kind == "cancelled":
                if not args.events:
                    print(f"\n{error} To continue: samtune train --resume {job.run_dir}", file=sys.stderr)
                return EXIT_CODES["cancelled"]
            raise
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from samtune.evaluate import evaluate_pairs, pair_files, scores_csv, scores_table

    if args.csv is not None and not args.csv.parent.is_dir():
        raise OutputError(f"Cannot write '{args.csv}': the folder '{args.csv.parent}' does not exist.")
    pairs = pair_files(args.pred, args.ref)
    scores = evaluate_pairs(pairs, structures=dict(args.structure) if args.structure else None,
                            tolerance_mm=args.tolerance_mm)  # fmt: skip
    print(scores_table(scores))
    if args.csv is not None:
        from samtune.atomic import atomic_write_text

        atomic_write_text(args.csv, scores_csv(scores))
        print(f"Wrote {args.csv}", file=sys.stderr)
    return 0


def _cmd_manifest(args: argparse.Namespace) -> int:
    import json

    from samtune.errors import DataError
    from samtune.train.manifest import build_manifest, validate_manifest

    if args.check is not None:
        problems = validate_manifest(args.check)
        if problems:
            raise DataError(f"Manifest '{args.check}' has {len(problems)} problem(s):\n  " + "\n  ".join(problems))
        print(f"{args.check}: OK", file=sys.stderr)
        return 0
    missing = [o for o, v in (("--images", args.images), ("--labels", args.labels), ("--out", args.out)) if v is None]
    if missing:
        raise ConfigurationError(f"samtune manifest needs {', '.join(missing)} to build one (or --check MANIFEST).")
    if not args.out.parent.is_dir():
        raise OutputError(f"Cannot write '{args.out}': the folder '{args.out.parent}' does not exist.")
    manifest = build_manifest(args.images, args.labels, structures=dict(args.structure) if args.structure else None,
                              fully_labelled=args.fully_labelled)  # fmt: skip
    from samtune.atomic import atomic_write_text

    atomic_write_text(args.out, json.dumps(manifest, indent=2) + "\n")
    problems = validate_manifest(args.out)
    if problems:
        raise DataError(
            f"Wrote '{args.out}' ({len(manifest['cases'])} cases), but it has {len(problems)} problem(s):\n  "
            + "\n  ".join(problems)
        )
    print(f"Wrote {args.out} ({len(manifest['cases'])} cases, checked)", file=sys.stderr)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from samtune.demo import run_demo

    if args.out_dir is not None and not args.out_dir.parent.is_dir():
        raise OutputError(f"Cannot create --out-dir '{args.out_dir}': '{args.out_dir.parent}' does not exist.")
    if args.epochs < 1:
        raise ConfigurationError(f"--epochs must be at least 1, got {args.epochs}.")
    run_demo(out_dir=args.out_dir, device=args.device, seed=args.seed, show_progress=not args.quiet,
             epochs=args.epochs)  # fmt: skip
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``samtune`` command; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_third_party(verbose=args.verbose)
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
