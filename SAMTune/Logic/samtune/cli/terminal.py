"""What the command line shows on a terminal: a progress bar, job events in words, or ``--events`` JSON lines."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

from samtune.errors import SAMTuneError


class ProgressBar:
    """Draws ``label [#####.....] done/total  elapsed  ETA`` on a terminal.

    Use as a context manager and pass :meth:`update` as the core's progress callback. Draws
    nothing when disabled or when the stream is not a terminal (logs stay clean).
    """

    def __init__(self, label: str, *, enabled: bool = True, stream: TextIO | None = None, width: int = 30):
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.width = width
        self.started = time.perf_counter()
        self.last: tuple[int, int] = (0, 0)

    def __enter__(self) -> ProgressBar:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled and self.last[1]:
            self.stream.write("\n")
            self.stream.flush()

    def update(self, done: int, total: int, message: str = "") -> None:
        """Progress callback: ``done`` of ``total`` units finished."""
        self.last = (done, total)
        if not self.enabled or total <= 0:
            return
        elapsed = time.perf_counter() - self.started
        filled = int(self.width * done / total)
        eta = elapsed / done * (total - done) if done else float("nan")
        bar = "#" * filled + "." * (self.width - filled)
        text = f"\r{self.label} [{bar}] {done}/{total}  {elapsed:5.1f} s  ETA {eta:5.1f} s  {message}"
        self.stream.write(text)
        self.stream.flush()


def epoch_line(metrics: dict[str, Any], epochs: int | None = None) -> str:
    """One epoch's metrics in words: ``epoch 3/20  loss 0.4121  validation Dice 0.8420  (12.3 s)``."""
    parts = [f"epoch {metrics['epoch']}" + (f"/{epochs}" if epochs else "")]
    if "loss" in metrics:
        parts.append(f"loss {float(metrics['loss']):.4f}")
    if "val_dice" in metrics:
        parts.append(f"validation Dice {float(metrics['val_dice']):.4f}")
    if "seconds" in metrics:
        parts.append(f"({float(metrics['seconds']):.1f} s)")
    return "  ".join(parts)


def summary_line(finished: dict[str, Any]) -> str:
    """The line every ``samtune train`` ends with: the model folder, its epoch, its validation Dice, the time."""
    metrics = finished.get("metrics") or {}
    score = f", validation Dice {float(metrics['val_dice']):.4f}" if "val_dice" in metrics else " (no validation data)"
    minutes = float(finished.get("seconds", 0.0)) / 60
    return f"Wrote model {finished['model']}: best epoch {finished['best_epoch']}{score}, trained in {minutes:.1f} min"


class TerminalEvents:
    """Shows job events on a terminal (progress bar, one line per epoch and messages on stderr), or with
    ``--events`` writes them as protocol lines on stdout, as the worker does. ``quiet`` shows no bar,
    no epoch lines and no information messages: only warnings (and the caller's final line)."""

    def __init__(self, label: str, *, quiet: bool, json_events: bool) -> None:
        self.json = None
        if json_events:
            from samtune.worker.events import EventWriter

            self.json = EventWriter(sys.stdout)
        self.quiet = quiet
        self.epochs: int | None = None
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
        kind = event["event"]
        if kind == "progress":
            if "epochs" in event:
                self.epochs = int(event["epochs"])  # type: ignore[call-overload]
            self.bar.update(int(event["step"]), int(event["total"]), str(event.get("stage", "")))  # type: ignore[call-overload]
        elif kind == "metrics" and not self.quiet:
            self.say(epoch_line(event, self.epochs))
        elif kind == "log" and (not self.quiet or event.get("level") in ("warning", "error")):
            self.say(str(event["message"]))

    def say(self, text: str) -> None:
        """A line on stderr, below the progress bar when one is drawn."""
        print(("\n" if self.bar.enabled and self.bar.last[1] else "") + text, file=sys.stderr)


@contextlib.contextmanager
def ending_events(events: TerminalEvents, job: Any, *, json_events: bool, stop: Any = None) -> Iterator[None]:
    """With ``--events``, end the stream with the protocol's ``cancelled`` or ``error`` event, as the worker does."""
    from samtune.worker.jobs import terminal_event
    from samtune.worker.train_job import record_final_event

    try:
        yield
    except SAMTuneError as error:
        final = terminal_event(error, job, signal=getattr(stop, "signal", None))
        record_final_event(job, final)
        if json_events:
            events(final)
        raise
    except Exception as error:  # as the worker: the protocol reports every failure
        if json_events:
            events({"event": "error", "kind": "internal", "exit_code": 1,
                    "message": f"Internal error: {type(error).__name__}: {error}."})  # fmt: skip
        raise
