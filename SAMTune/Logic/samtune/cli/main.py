"""The ``samtune`` command line: ``models``, ``predict``, ``presets``, ``train``, ``evaluate``,
``manifest`` and ``demo``.

Exit codes: 0 success, 1 internal error, 2 bad option or configuration, 3 bad input data,
4 missing or corrupt weights, 5 device not available, 6 output cannot be written,
7 training diverged (NaN loss), 8 out of memory, 9 cancelled (resume with ``--resume``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from samtune import __version__
from samtune.cli import commands
from samtune.cli.options import add_options
from samtune.errors import EXIT_CODES, SAMTuneError
from samtune.quiet import quiet_third_party
from samtune.worker.jobs import PredictJob


def _add_output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bar and no per-epoch lines: warnings and the final line only"
    )
    parser.add_argument("--events", action="store_true", help="write JSON events on stdout (the worker protocol)")


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
    add_options(p, PredictJob)  # every job field with its help text (samtune.worker.jobs, samtune.predict.config)
    _add_output_flags(p)
    p.set_defaults(func=commands.predict)


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser(
        "train",
        help="fine-tune a backbone on labelled cases with a preset; writes a model folder",
        description=(
            "Fine-tune SAM on the cases of a training manifest with a preset, and write the model folder "
            "(trainable weights + model card). Every preset field can be overridden with --set."
        ),
    )
    t.add_argument("--preset", help="preset name (see `samtune presets`); required unless --resume or --from")
    t.add_argument(
        "--from",
        dest="parent",
        type=Path,
        metavar="MODEL",
        help="retrain this model folder: continue from its weights with its own settings (--set and --preset on "
        "top) on the cases of --train-manifest, old and new; the new model's card links it as its parent",
    )
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
    t.add_argument(
        "--dry-run",
        action="store_true",
        help="check the manifest, the settings and the output folders in seconds: trains a tiny random model "
        "of the backbone's architecture (useless for segmenting) and writes every file a real run writes",
    )
    _add_output_flags(t)
    t.set_defaults(func=commands.train)


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
    e.set_defaults(func=commands.evaluate)


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
    m.set_defaults(func=commands.manifest)


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
    m.set_defaults(func=commands.models)

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
    pr.set_defaults(func=commands.presets)

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
    d.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="train exactly N epochs (default: the cpu_quick preset's 20 epochs and at least 300 steps)",
    )
    d.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    d.add_argument("--seed", type=int, default=0, help="phantom seed (default 0)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=commands.demo)
    return parser


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


__all__ = ["EXIT_CODES", "build_parser", "main"]
