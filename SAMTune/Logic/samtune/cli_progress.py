"""A minimal terminal progress bar for the command line (the core reports through callbacks)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


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
