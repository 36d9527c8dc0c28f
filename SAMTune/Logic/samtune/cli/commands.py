"""The ``samtune`` commands: one function per subcommand, given the parsed arguments; each returns
the exit code (errors are raised as :class:`~samtune.errors.SAMTuneError` and reported by
:func:`samtune.cli.main.main`)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from samtune.cli.options import options_to_dict
from samtune.cli.terminal import TerminalEvents, ending_events, summary_line
from samtune.errors import EXIT_CODES, ConfigurationError, OutputError, SAMTuneError
from samtune.worker.jobs import PredictJob


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


def models(args: argparse.Namespace) -> int:
    from samtune.models.registry import list_backbones
    from samtune.models.weights import weights_status

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


def predict(args: argparse.Namespace) -> int:
    from samtune.worker.jobs import job_from_dict
    from samtune.worker.main import StopFlag
    from samtune.worker.predict_job import run_predict_job

    stop = StopFlag()
    stop.install()
    with TerminalEvents("predict", quiet=args.quiet, json_events=args.events) as events:
        with ending_events(events, None, json_events=args.events):  # a bad setting still ends with an error event
            job = job_from_dict({"kind": "predict", **options_to_dict(PredictJob, args)}, where="samtune predict")
        assert isinstance(job, PredictJob)

        def emit(event: dict[str, object]) -> None:
            if not args.events and event["event"] == "started":
                what = f"{event['pictures']} pictures in {job.image}" if "pictures" in event else job.image
                print(f"Segmenting {what} with {job.model} on {event['device']} ({event['mode']} mode)",
                      file=sys.stderr)  # fmt: skip
            elif not args.events and event["event"] == "finished":
                events.bar.__exit__()
                seconds = float(event["seconds"])  # type: ignore[arg-type]
                if "pictures" in event:
                    print(f"Wrote {event['pictures']} masks to {job.out} in {seconds:.1f} s", file=sys.stderr)
                else:
                    print(f"Wrote {job.out} ({event['foreground_voxels']} foreground voxels) in {seconds:.1f} s",
                          file=sys.stderr)  # fmt: skip
            else:
                events(event)

        with ending_events(events, job, json_events=args.events, stop=stop):
            run_predict_job(job, emit=emit, should_stop=stop)
    return 0


def presets(args: argparse.Namespace) -> int:
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


def train(args: argparse.Namespace) -> int:
    from samtune.worker.jobs import TrainJob, load_run_job
    from samtune.worker.main import StopFlag
    from samtune.worker.train_job import run_train_job

    if args.resume is not None:
        job = load_run_job(args.resume, device=args.device)
    else:
        starts = (("--preset or --from", args.preset or args.parent), ("--train-manifest", args.train_manifest),
                  ("--out", args.out))  # fmt: skip
        missing = [name for name, value in starts if value is None]
        if missing:
            raise ConfigurationError(f"samtune train needs {', '.join(missing)} (or --resume RUN_DIR).")
        if args.parent is not None:
            from samtune.library.card import read_model_card

            read_model_card(args.parent)  # not a model folder: said before any folder is made
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
            weights=str(args.weights.resolve()) if args.weights else None, tiny=args.dry_run,
            parent=str(args.parent.resolve()) if args.parent else None,
        )  # fmt: skip
    stop = StopFlag()
    stop.install()
    with TerminalEvents("train", quiet=args.quiet, json_events=args.events) as events:

        def emit(event: dict[str, object]) -> None:
            if args.events:
                events(event)
                if event["event"] == "finished":  # the summary line in every mode; stdout stays JSON
                    print(summary_line(event), file=sys.stderr)
            elif event["event"] == "started":
                if not args.quiet:
                    what = (
                        f"Retraining {os.path.basename(job.parent)}"
                        if job.parent
                        else f"Training {job.preset or 'custom'}"
                    )
                    print(f"{what} ({event['backbone']}, {event['method']}) into {event['run_dir']}",
                          file=sys.stderr)  # fmt: skip
            elif event["event"] == "finished":
                events.say(summary_line(event))
            else:
                events(event)

        try:
            with ending_events(events, job, json_events=args.events, stop=stop):
                run_train_job(job, emit=emit, resume=args.resume is not None, should_stop=stop)
        except SAMTuneError as error:
            if error.kind == "cancelled":
                if not args.events:
                    print(f"\n{error} To continue: samtune train --resume {job.run_dir}", file=sys.stderr)
                return EXIT_CODES["cancelled"]
            raise
    return 0


def evaluate(args: argparse.Namespace) -> int:
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


def manifest(args: argparse.Namespace) -> int:

    from samtune.errors import DataError
    from samtune.train.manifest import build_manifest, validate_manifest, write_manifest

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
    write_manifest(args.out, manifest["cases"])
    problems = validate_manifest(args.out)
    if problems:
        raise DataError(
            f"Wrote '{args.out}' ({len(manifest['cases'])} cases), but it has {len(problems)} problem(s):\n  "
            + "\n  ".join(problems)
        )
    print(f"Wrote {args.out} ({len(manifest['cases'])} cases, checked)", file=sys.stderr)
    return 0


def demo(args: argparse.Namespace) -> int:
    from samtune.cli.demo import run_demo

    if args.out_dir is not None and not args.out_dir.parent.is_dir():
        raise OutputError(f"Cannot create --out-dir '{args.out_dir}': '{args.out_dir.parent}' does not exist.")
    if args.epochs is not None and args.epochs < 1:
        raise ConfigurationError(f"--epochs must be at least 1, got {args.epochs}.")
    run_demo(out_dir=args.out_dir, device=args.device, seed=args.seed, show_progress=not args.quiet,
             epochs=args.epochs)  # fmt: skip
    return 0
