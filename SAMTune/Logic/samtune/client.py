"""Client side of the background worker: launch it, read its events, cancel it, finish exactly once.

The client never blocks: a reader thread moves the worker's output lines into a queue and
:meth:`WorkerClient.poll` (called by a Qt timer in Slicer, or by :meth:`WorkerClient.wait` in a
plain loop) drains it on the caller's thread, updates the state and calls the callbacks there.

States::

    idle --start()--> running --(last line / exit)--> finished | failed | cancelled
                        |--cancel()--> cancelling --(exit)--> cancelled (or finished/failed if it
                                                   ended first)

Cancel asks the worker to stop (``STOP`` file in the run folder and SIGTERM, so it writes a
checkpoint), then kills the whole process tree if it has not exited after ``kill_grace_s``.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from samtune.errors import EXIT_CODES
from samtune.events import parse_event_line


class JobState(str, Enum):
    IDLE = "idle"
    RUNNING = "running"
    CANCELLING = "cancelling"
    FINISHED = "finished"
    CANCELLED = "cancelled"
    FAILED = "failed"

    @property
    def done(self) -> bool:
        return self in (JobState.FINISHED, JobState.CANCELLED, JobState.FAILED)


@dataclass
class JobResult:
    """How a job ended.

    Attributes:
        state: ``finished``, ``cancelled`` or ``failed``.
        exit_code: The worker's exit code (negative: killed by that signal).
        message: In words: the worker's error message, or what happened.
        event: The terminal protocol event (``finished``/``cancelled``/``error``), if one came.
        run_dir: The run folder (training), for resuming.
    """

    state: JobState
    exit_code: int | None
    message: str
    event: dict[str, Any] | None = None
    run_dir: str | None = None

    @property
    def resumable(self) -> bool:
        """A training run that stopped before the end (cancelled, crashed, killed) can be resumed."""
        return self.run_dir is not None and self.state in (JobState.CANCELLED, JobState.FAILED)


Launcher = Callable[[Sequence[str], dict[str, str]], Any]
"""``launcher(args, env_updates)`` -> a ``Popen``-like object with text ``stdout`` (stderr merged)."""


def default_launcher(args: Sequence[str], env_updates: dict[str, str]) -> subprocess.Popen[str]:
    """``subprocess.Popen`` with stdout and stderr in one text pipe, in its own process group."""
    env = {**os.environ, **env_updates}
    kwargs: dict[str, Any] = {"start_new_session": True} if os.name == "posix" else {}
    return subprocess.Popen(
        list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env, **kwargs
    )


def worker_command(python: str, *, job: str | None = None, resume: str | None = None) -> list[str]:
    """The command line that runs the worker with ``python`` (Slicer: ``PythonSlicer``)."""
    if (job is None) == (resume is None):
        raise ValueError("Give exactly one of a job file or a run folder to resume.")
    return [python, "-u", "-m", "samtune.worker", *(["--job", job] if job else ["--resume", str(resume)])]


def kill_process_tree(pid: int) -> None:
    """Kill a process and every process it started (psutil when present, else its process group)."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is a dependency; this keeps POSIX working without it
        if os.name == "posix":
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)
        return
    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    processes = [*parent.children(recursive=True), parent]
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(processes, timeout=5)


@dataclass
class WorkerClient:
    """Runs one worker job and tracks it.

    Attributes:
        args: The worker's command line (see :func:`worker_command`).
        env: Environment variables added for the worker (e.g. ``PYTHONPATH``).
        run_dir: The training run's folder (for the stop file and resuming); ``None`` for prediction.
        on_event: Called with every protocol event, in order, on the polling thread.
        on_log: Called with every line that is not a protocol event (warnings, tracebacks).
        on_finished: Called exactly once with the :class:`JobResult`.
        launcher: How the process is started (Slicer: ``slicer.util.launchConsoleProcess``).
        kill_grace_s: Seconds a cancelled worker gets to write its checkpoint before it is killed.
    """

    args: Sequence[str]
    env: dict[str, str] = field(default_factory=dict)
    run_dir: str | None = None
    on_event: Callable[[dict[str, Any]], None] | None = None
    on_log: Callable[[str], None] | None = None
    on_finished: Callable[[JobResult], None] | None = None
    launcher: Launcher = default_launcher
    kill_grace_s: float = 30.0

    def __post_init__(self) -> None:
        self.state = JobState.IDLE
        self.result: JobResult | None = None
        self.events: list[dict[str, Any]] = []
        self.last_progress: dict[str, Any] | None = None
        self._tail: deque[str] = deque(maxlen=30)
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._process: Any = None
        self._reader: threading.Thread | None = None
        self._output_closed = False
        self._cancel_requested_at: float | None = None
        self._killed = False
        self._terminal: dict[str, Any] | None = None

    # -- control -------------------------------------------------------------------------------
    def start(self) -> None:
        if self.state is not JobState.IDLE:
            raise RuntimeError(f"This job was already started (state: {self.state.value}); create a new client.")
        self._process = self.launcher(self.args, self.env)
        self.state = JobState.RUNNING
        self._reader = threading.Thread(target=self._read, name="samtune-worker-reader", daemon=True)
        self._reader.start()

    def cancel(self) -> None:
        """Ask the worker to stop after its current step and keep a checkpoint (non-blocking)."""
        if self.state is not JobState.RUNNING:
            return
        self.state = JobState.CANCELLING
        self._cancel_requested_at = time.monotonic()
        if self.run_dir is not None and Path(self.run_dir).is_dir():
            with contextlib.suppress(OSError):
                (Path(self.run_dir) / "STOP").write_text("stop requested by SAMTune\n", encoding="utf-8")
        if os.name == "posix" and self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._process.pid, signal.SIGTERM)

    def kill(self) -> None:
        """Stop now: kill the worker and its children (the last periodic checkpoint is kept)."""
        if self._process is not None and self._process.poll() is None:
            if self.state is JobState.RUNNING:
                self.state = JobState.CANCELLING
            self._killed = True
            kill_process_tree(self._process.pid)

    # -- progress ------------------------------------------------------------------------------
    def poll(self) -> list[dict[str, Any]]:
        """Handle everything the worker wrote since the last call; finish when it has exited.

        Returns:
            The protocol events handled by this call.
        """
        handled: list[dict[str, Any]] = []
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._output_closed = True
                continue
            event = parse_event_line(line)
            if event is None:
                text = line.rstrip("\n")
                if text:
                    self._tail.append(text)
                    if self.on_log is not None:
                        self.on_log(text)
                continue
            self.events.append(event)
            handled.append(event)
            if event["event"] == "progress":
                self.last_progress = event
            if event["event"] in ("finished", "cancelled", "error"):
                self._terminal = event
            if self.on_event is not None:
                self.on_event(event)
        requested = self._cancel_requested_at
        overdue = requested is not None and time.monotonic() - requested > self.kill_grace_s
        if self.state is JobState.CANCELLING and not self._killed and overdue:
            self.kill()
        if self._process is not None and not self.state.done and self._output_closed:
            code = self._process.poll()
            if code is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    code = self._process.wait(timeout=1.0)
            if code is not None:
                self._finish(code)
        return handled

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> JobResult:
        """Poll in a plain loop until the job ends (scripts, tests, the Python console)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.state.done:
            self.poll()
            if self.state.done:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"The worker did not finish within {timeout} s (state: {self.state.value}).")
            time.sleep(interval)
        assert self.result is not None
        return self.result

    @property
    def eta_s(self) -> float | None:
        return None if self.last_progress is None else self.last_progress.get("eta_s")

    @property
    def fraction(self) -> float:
        """Done fraction of the current stage, 0..1."""
        p = self.last_progress
        if not p or not p.get("total"):
            return 0.0
        return min(1.0, float(p.get("step", 0)) / float(p["total"]))

    # -- internals -----------------------------------------------------------------------------
    def _read(self) -> None:
        stream = self._process.stdout
        try:
            for line in iter(stream.readline, ""):
                self._queue.put(line)
        except (OSError, ValueError):  # the pipe closed under us (process killed)
            pass
        finally:
            self._queue.put(None)

    def _finish(self, code: int) -> None:
        if self.state.done:  # one finish path, idempotent
            return
        terminal = self._terminal
        kind = terminal["event"] if terminal else None
        if kind == "finished" and code == 0:
            state, message = JobState.FINISHED, "Finished."
        elif kind == "cancelled" or code == EXIT_CODES["cancelled"]:
            state = JobState.CANCELLED
            message = (terminal or {}).get("message") or "Cancelled; the last checkpoint was kept."
        elif kind == "error":
            state, message = JobState.FAILED, str(terminal.get("message") if terminal else "")
        elif self._killed or (self.state is JobState.CANCELLING and code != 0):
            state, message = JobState.CANCELLED, "Stopped; the last periodic checkpoint was kept."
        else:
            tail = "\n".join(list(self._tail)[-10:])
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            state = JobState.FAILED
            message = f"The worker {how} without reporting a result." + (f" Its last output:\n{tail}" if tail else "")
        self.state = state
        self.result = JobResult(state, code, message, terminal, self.run_dir)
        if self.on_finished is not None:
            self.on_finished(self.result)


def python_for_worker() -> str:
    """The Python executable to run the worker with: Slicer's ``PythonSlicer`` when present."""
    import shutil

    found = shutil.which("PythonSlicer")
    return found or sys.executable


__all__ = [
    "JobResult",
    "JobState",
    "WorkerClient",
    "default_launcher",
    "kill_process_tree",
    "python_for_worker",
    "worker_command",
]
