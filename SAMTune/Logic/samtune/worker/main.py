"""The background worker: ``python -m samtune.worker --job job.json`` or ``--resume RUN_DIR``.

Runs one training or prediction job and reports on stdout with **one JSON object per line**
(protocol version 1, ``docs/worker-protocol.md``); free text goes to stderr. SIGTERM, SIGINT or a
``STOP`` file in the run folder stop a training run after the current step, with a checkpoint to
resume from.

Exit codes: 0 finished, 1 internal error, 2 configuration, 3 data, 4 weights, 5 device,
6 output, 7 diverged, 8 out of memory, 9 cancelled.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from samtune.errors import EXIT_CODES, SAMTuneError
from samtune.quiet import quiet_third_party, verbose_from_environment
from samtune.worker.events import EventWriter
from samtune.worker.jobs import PredictJob, TrainJob, load_job, load_run_job, terminal_event
from samtune.worker.predict_job import run_predict_job
from samtune.worker.train_job import record_final_event, run_train_job


class StopFlag:
    """Set by SIGTERM / SIGINT; polled by the trainer after every step and by prediction after every slice."""

    def __init__(self) -> None:
        self.requested = False
        self.signal: str | None = None

    def install(self) -> None:
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, self._handle)

    def _handle(self, number: int, frame: object) -> None:
        self.requested = True
        self.signal = signal.Signals(number).name

    def __call__(self) -> bool:
        return self.requested


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``python -m samtune.worker``."""
    parser = argparse.ArgumentParser(
        prog="python -m samtune.worker",
        description="Run one SAMTune training or prediction job, reporting JSON lines on stdout.",
    )
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--job", type=Path, help="job file (JSON): kind train or predict")
    group.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue the training run in RUN_DIR")
    group.add_argument(
        "--list-devices",
        action="store_true",
        help="report the devices this machine offers (CUDA with free memory, MPS, CPU) in a 'finished' event "
        "and exit; the Slicer panel asks this way, so no CUDA context is ever created in Slicer's process",
    )
    return parser


def run(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None) -> int:
    """Run the worker; returns its exit code."""
    args = build_parser().parse_args(argv)
    quiet_third_party(verbose=verbose_from_environment())
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    emit = EventWriter(stdout or sys.stdout)
    stop = StopFlag()
    stop.install()
    job: TrainJob | PredictJob | None = None
    try:
        if args.list_devices:
            from samtune.models.device import describe_devices

            emit({"event": "finished", "kind": "devices", "devices": describe_devices()})
            return 0
        job = load_run_job(args.resume) if args.resume is not None else load_job(args.job)
        if isinstance(job, TrainJob):
            run_train_job(job, emit=emit, resume=args.resume is not None, should_stop=stop)
        else:
            run_predict_job(job, emit=emit, should_stop=stop)
        return 0
    except SAMTuneError as error:
        final = terminal_event(error, job, signal=stop.signal)
        emit(final)
        record_final_event(job, final)
        print(f"samtune worker: {error}", file=sys.stderr)
        return EXIT_CODES.get(error.kind, 1)
    except Exception as error:  # noqa: BLE001 - the protocol must report every failure
        traceback.print_exc(file=sys.stderr)
        emit({"event": "error", "kind": "internal", "exit_code": 1,
              "message": f"Internal error: {type(error).__name__}: {error}. Details are on stderr."})  # fmt: skip
        return 1


def main() -> None:
    """Entry point of ``python -m samtune.worker``."""
    sys.exit(run())
