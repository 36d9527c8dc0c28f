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


class TerminalEvents:
    """Shows job events on a terminal (progress bar, metrics and messages on stderr), or with
    ``--events`` writes them as protocol lines on stdout, as the worker does."""

    def __init__(self, label: str, *, quiet: bool, json_events: bool) -> None:
        self.json = None
        if json_events:
            from samtune.worker.events import EventWriter

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
        kind = event["event"]
        if kind == "progress":
            self.bar.update(int(event["step"]), int(event["total"]), str(event.get("stage", "")))  # type: ignore[call-overload]
        elif kind == "metrics":
            shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in event.items() if k != "event"}
            print(f"\n{shown}" if self.bar.enabled else shown, file=sys.stderr)
        elif kind == "log":
            print(("\n" if self.bar.enabled else "") + str(event["message"]), file=sys.stderr)


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
