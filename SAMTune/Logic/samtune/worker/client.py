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

In Slicer the process started is not the worker itself: ``PythonSlicer`` is CTK's AppLauncher,
which sets up the environment and runs ``python-real`` as its *child* (a ``QProcess`` with
forwarded channels; the launcher installs no signal handlers and forwards none). Signalling only
the launcher would leave the worker running, so every signal goes to the whole tree, children
first, and the tree's members are remembered, so a kill still reaches the worker after the launcher
has gone.

The reader thread reads bytes and decodes each line as UTF-8 with replacement characters: one
undecodable byte (a library printing in the console's code page) must not end the reading, or the
pipe would fill and the worker block. Launch the worker with ``PYTHONIOENCODING=utf-8``
(:data:`WORKER_ENV`).
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
from samtune.privacy import TELEMETRY_OFF
from samtune.worker.events import parse_event_line


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


#: Environment the worker must run with: unbuffered, UTF-8 output (what the reader decodes), and
#: third-party telemetry off from the start (see :func:`samtune.privacy.onnxruntime_module`).
WORKER_ENV = {"PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8", **TELEMETRY_OFF}

Launcher = Callable[[Sequence[str], dict[str, str]], Any]
"""``launcher(args, env_updates)`` -> a ``Popen``-like object with text ``stdout`` (stderr merged)."""


def default_launcher(args: Sequence[str], env_updates: dict[str, str]) -> subprocess.Popen[str]:
    """``subprocess.Popen`` with stdout and stderr in one text pipe, in its own process group."""
    env = {**os.environ, **env_updates}
    kwargs: dict[str, Any] = {"start_new_session": True} if os.name == "posix" else {}
    return subprocess.Popen(
        list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env, **kwargs
    )


def worker_command(
    python: str, *, job: str | None = None, resume: str | None = None, list_devices: bool = False
) -> list[str]:
    """The command line that runs the worker with ``python`` (Slicer: ``PythonSlicer``)."""
    if (job is not None) + (resume is not None) + bool(list_devices) != 1:
        raise ValueError("Give exactly one of a job file, a run folder to resume, or list_devices.")
    if list_devices:
        return [python, "-u", "-m", "samtune.worker", "--list-devices"]
    return [python, "-u", "-m", "samtune.worker", *(["--job", job] if job else ["--resume", str(resume)])]


def process_tree(pid: int) -> list[Any]:
    """``psutil.Process`` objects of ``pid``'s descendants (deepest first) and then ``pid`` itself."""
    import psutil

    try:
        parent = psutil.Process(pid)
        children = parent.children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [*reversed(children), parent]


def signal_processes(processes: Sequence[Any], number: int) -> None:
    """Send ``number`` to each process in order, skipping those that have ended (or were reused)."""
    import psutil

    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
            if process.is_running():  # psutil compares the creation time: a reused pid is not signalled
                process.send_signal(number)


def kill_process_tree(pid: int, *, known: Sequence[Any] = ()) -> None:
    """Kill a process, every process it started, and ``known`` ones (members seen earlier), children first."""
    import psutil

    processes = list(known)
    seen = {p.pid for p in processes}
    processes = [p for p in process_tree(pid) if p.pid not in seen] + processes
    signal_processes(sorted(processes, key=lambda p: p.pid == pid), signal.SIGKILL if os.name == "posix" else 9)
    # the root is our own child: leave its exit status for Popen (waiting here would reap it, and its code be lost)
    psutil.wait_procs([p for p in processes if p.pid != pid], timeout=5)


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
        self._tree: list[Any] = []  # every process of the job seen so far (launcher, worker, its children)
        self._tree_seen_at = 0.0

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
        self._remember_tree()
        if os.name == "posix":  # the worker first: a launcher may not pass the signal on
            signal_processes(self._tree, signal.SIGTERM)

    def kill(self) -> None:
        """Stop now: kill the worker, its launcher and their children (the last periodic checkpoint is kept).

        Works when the launcher has already exited and the worker it started is still running.
        """
        if self._process is None or self.state.done:
            return
        self._remember_tree()
        if not any(p.is_running() for p in self._tree) and self._process.poll() is not None:
            return
        if self.state is JobState.RUNNING:
            self.state = JobState.CANCELLING
        self._killed = True
        kill_process_tree(self._process.pid, known=self._tree)

    def _remember_tree(self) -> None:
        """Add the job's current processes to the ones remembered (the launcher's child appears late)."""
        self._tree_seen_at = time.monotonic()
        known = {p.pid for p in self._tree}
        self._tree = [p for p in process_tree(self._process.pid) if p.pid not in known] + self._tree

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
        if self._process is not None and not self.state.done and time.monotonic() - self._tree_seen_at > 1.0:
            self._remember_tree()
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
        source = getattr(stream, "buffer", stream)  # a text pipe's bytes: decoding is ours, line by line
        try:
            while True:
                line = source.readline()
                if not line:
                    break
                self._queue.put(line.decode("utf-8", errors="replace") if isinstance(line, bytes) else line)
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
        elif kind == "finished" and not self._killed:
            state, message = JobState.FAILED, f"The worker reported the job finished but then exited with code {code}."
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
    "WORKER_ENV",
    "kill_process_tree",
    "process_tree",
    "signal_processes",
    "python_for_worker",
    "worker_command",
]
