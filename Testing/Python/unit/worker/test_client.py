"""The background-job client (samtune.worker.client) driven by a plain loop.

Its state machine runs against :class:`FakeWorker`: a tiny real subprocess (no torch) that prints
prepared protocol lines, writes to stderr, waits, honours or ignores SIGTERM and exits with a chosen
code, so every path takes a fraction of a second. One test runs the real ``python -m samtune.worker``
end to end; the worker itself (events, checkpoints, cancel, resume) is tested in ``test_worker.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from samtune.data import write_phantom_cases
from samtune.worker.client import WORKER_ENV, JobResult, JobState, WorkerClient, default_launcher, worker_command
from samtune.worker.events import event_line

OVERRIDES = {
    "backbone": "sam_vit_b", "device": "cpu", "batch_size": 2, "lr": 0.01, "warmup_steps": 1,
    "val_fraction": 0.34, "augment": {"enabled": False}, "patience": 0, "min_steps": 0,
}  # fmt: skip

#: Long enough that a test only ends through what it tests (a cancel, a kill), never by the wait running out.
HOLD_S = 60.0

#: What the worker does on SIGTERM: report ``cancelled`` and exit with the cancelled code.
CANCELS = ([{"event": "cancelled", "message": "Stopped at step 2.", "signal": "SIGTERM"}], 9)


def _steps(items: Sequence[Any]) -> list[tuple[str, Any]]:
    steps: list[tuple[str, Any]] = []
    for item in items:
        if isinstance(item, dict):
            steps.append(("stdout", event_line(item)))
        elif isinstance(item, str):
            steps.append(("stdout", item))
        else:
            steps.append(tuple(item))
    return steps


@dataclass
class FakeWorker:
    """A launcher that starts a stand-in for the worker: ``sys.executable -c SCRIPT``, through :func:`default_launcher`.

    Attributes:
        output: What it writes, in order: a dict is an event (written with :func:`event_line`), a
            ``str`` a line on stdout, ``("stderr", text)`` a line on stderr, ``("pid", "")`` its pid
            on stdout, ``("sleep", seconds)`` a pause.
        exit_code: How it ends after ``hold_s``; a negative code kills it with that signal.
        hold_s: Seconds it waits after its output before it ends (time for a cancel or a kill).
        sigterm: ``"default"`` (it dies of it), ``"ignore"``, or ``(output, exit_code)``: what it
            writes when SIGTERM arrives and how it then exits (:data:`CANCELS`: as the worker does).
        behind_launcher: Run it as the child of a parent that ignores SIGTERM and exits with the
            child's code, as CTK's AppLauncher (``PythonSlicer``) runs ``python-real``.
        calls: The ``(args, env)`` of every launch.
    """

    output: Sequence[Any] = ()
    exit_code: int = 0
    hold_s: float = 0.0
    sigterm: str | tuple[Sequence[Any], int] = "default"
    behind_launcher: bool = False
    calls: list[tuple[list[str], dict[str, str]]] = field(default_factory=list)

    def script(self) -> str:
        on_term: tuple[list[tuple[str, Any]], int] = ([], 0)
        if isinstance(self.sigterm, tuple):
            handler, on_term = "on_sigterm", (_steps(self.sigterm[0]), self.sigterm[1])
        else:
            handler = {"default": "signal.SIG_DFL", "ignore": "signal.SIG_IGN"}[self.sigterm]
        return (
            "import os, signal, sys, time\n"
            "def play(steps):\n"
            "    for stream, value in steps:\n"
            "        if stream == 'sleep':\n"
            "            time.sleep(value)\n"
            "        elif stream == 'pid':\n"
            "            print(os.getpid(), flush=True)\n"
            "        else:\n"
            "            print(value, file=getattr(sys, stream), flush=True)\n"
            "def end(code):\n"
            "    if code < 0:\n"
            "        os.kill(os.getpid(), -code)\n"
            "        time.sleep(10)\n"
            "    sys.exit(code)\n"
            "def on_sigterm(number, frame):\n"
            f"    play({on_term[0]!r})\n"
            f"    end({on_term[1]!r})\n"
            f"signal.signal(signal.SIGTERM, {handler})\n"
            f"play({_steps(self.output)!r})\n"
            f"time.sleep({self.hold_s!r})\n"
            f"end({int(self.exit_code)!r})\n"
        )

    def __call__(self, args: Sequence[str], env: dict[str, str]) -> subprocess.Popen[str]:
        self.calls.append((list(args), dict(env)))
        command = [sys.executable, "-c", self.script()]
        if self.behind_launcher:
            parent = (
                "import signal, subprocess, sys\n"
                "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                "sys.exit(subprocess.call(sys.argv[1:]))\n"
            )
            command = [sys.executable, "-c", parent, *command]
        return default_launcher(command, env)


@dataclass
class Run:
    """A client with what its callbacks received."""

    client: WorkerClient
    events: list[dict[str, Any]]
    logs: list[str]
    finished: list[JobResult]


@pytest.fixture
def start() -> Iterator[Callable[..., Run]]:
    """Start a client on a launcher; any job a test leaves running is killed afterwards."""
    runs: list[Run] = []

    def begin(launcher: Any, args: Sequence[str] = ("worker", "--job", "job.json"), **kwargs: Any) -> Run:
        run = Run(WorkerClient(args, env=dict(WORKER_ENV), launcher=launcher, **kwargs), [], [], [])
        run.client.on_event, run.client.on_log, run.client.on_finished = (
            run.events.append,
            run.logs.append,
            run.finished.append,
        )
        runs.append(run)
        run.client.start()
        return run

    yield begin
    for run in runs:
        if not run.client.state.done:
            run.client.kill()
            run.client.wait(timeout=10)


def _poll_until(client: WorkerClient, condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        client.poll()
        assert time.monotonic() < deadline, f"condition not met (state {client.state.value})"
        time.sleep(0.005)


def _gone(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


PROGRESS = {"event": "progress", "stage": "train", "step": 2, "total": 8}


# --- the real worker, end to end ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("client")
    write_phantom_cases(folder)
    return folder


def test_a_real_training_job_runs_to_the_end_and_finishes_once(data: Path) -> None:
    job = {"version": 1, "kind": "train", "preset": "cpu_quick", "tiny": True, "manifest": "manifest.json",
           "run_dir": "full", "overrides": {**OVERRIDES, "epochs": 2}}  # fmt: skip
    (data / "full.job.json").write_text(json.dumps(job), encoding="utf-8")
    seen: list[str] = []
    finished: list[JobResult] = []
    client = WorkerClient(worker_command(sys.executable, job=str(data / "full.job.json")), env=dict(WORKER_ENV),
                          run_dir=str(data / "full"), on_finished=finished.append)  # fmt: skip
    client.on_event = lambda e: seen.append(e["event"])
    client.start()
    result = client.wait(timeout=300)
    assert result.state is JobState.FINISHED and result.exit_code == 0, result.message
    assert finished == [result]
    assert seen[0] == "started" and seen[-1] == "finished"
    assert "progress" in seen and seen.count("metrics") == 2
    assert client.fraction == 1.0
    assert Path(result.event["model"], "model_card.json").is_file()
    assert not result.resumable


# --- events, logs, progress ---------------------------------------------------------------------------------


def test_events_reach_on_event_in_order_and_other_lines_reach_on_log(start: Callable[..., Run]) -> None:
    output = [
        {"event": "started", "kind": "train"},
        "Downloading something (a library's own print)",
        PROGRESS,
        ("stderr", "UserWarning: a warning on stderr"),
        "",
        '{"v": 2, "event": "progress"}',
        {"event": "metrics", "epoch": 1, "val_dice": float("nan")},
        {"event": "finished", "model": "/runs/a/model"},
    ]
    run = start(FakeWorker(output))
    handled: list[dict[str, Any]] = []
    while not run.client.state.done:
        handled.extend(run.client.poll())
        time.sleep(0.005)
    result = run.client.result
    assert result is not None and result.state is JobState.FINISHED and result.exit_code == 0
    assert [e["event"] for e in run.events] == ["started", "progress", "metrics", "finished"]
    assert run.events == run.client.events == handled  # every event once, in order, on the polling thread
    assert run.events[2]["val_dice"] is None
    assert run.logs == [
        "Downloading something (a library's own print)",
        "UserWarning: a warning on stderr",  # stderr is merged into the same pipe
        '{"v": 2, "event": "progress"}',  # another protocol version is text, not an event
    ]
    assert result.event == run.events[-1] and result.message == "Finished."
    assert run.finished == [result]
    assert run.client.poll() == [] and run.finished == [result]  # polling after the end changes nothing


def test_a_client_starts_its_launcher_once_with_the_command_and_environment(start: Callable[..., Run]) -> None:
    fake = FakeWorker([{"event": "finished"}])
    run = start(fake, args=["python", "-m", "samtune.worker", "--job", "j.json"])
    assert run.client.state is JobState.RUNNING
    with pytest.raises(RuntimeError, match="already started"):
        run.client.start()
    run.client.wait(timeout=10)
    with pytest.raises(RuntimeError, match=r"already started \(state: finished\)"):
        run.client.start()
    assert fake.calls == [(["python", "-m", "samtune.worker", "--job", "j.json"], WORKER_ENV)]


def test_a_new_client_is_idle_and_has_no_progress() -> None:
    client = WorkerClient(["unused"], launcher=FakeWorker())
    assert client.state is JobState.IDLE and client.result is None
    assert client.fraction == 0.0 and client.eta_s is None
    client.cancel()  # nothing to cancel or kill yet
    client.kill()
    assert client.state is JobState.IDLE


def test_the_fraction_follows_the_last_progress_event(start: Callable[..., Run]) -> None:
    output = [
        {"event": "progress", "stage": "cache", "step": 3},  # no total: nothing to show yet
        {"event": "progress", "stage": "train", "step": 0, "total": 8},
        {"event": "progress", "stage": "train", "step": 2, "total": 8, "eta_s": 12.5},
        {"event": "metrics", "epoch": 1},  # not progress: the fraction stays
        {"event": "progress", "stage": "train", "step": 6, "total": 8, "eta_s": 3.0},
        {"event": "progress", "stage": "predict", "step": 1, "total": 0},
        {"event": "progress", "stage": "predict", "step": 12, "total": 8},  # past the total: capped
        {"event": "finished"},
    ]
    run = start(FakeWorker(output))
    seen: list[tuple[str, float, Any]] = []
    run.client.on_event = lambda e: seen.append((e["event"], run.client.fraction, run.client.eta_s))
    run.client.wait(timeout=10)
    assert seen == [
        ("progress", 0.0, None),
        ("progress", 0.0, None),
        ("progress", 0.25, 12.5),
        ("metrics", 0.25, 12.5),
        ("progress", 0.75, 3.0),
        ("progress", 0.0, None),
        ("progress", 1.0, None),
        ("finished", 1.0, None),
    ]
    assert run.client.last_progress is not None and run.client.last_progress["step"] == 12


# --- cancel and kill --------------------------------------------------------------------------------------------


def test_cancel_writes_the_stop_file_and_sends_sigterm_and_the_worker_reports_cancelled(
    start: Callable[..., Run], tmp_path: Path
) -> None:
    began = time.monotonic()
    run = start(FakeWorker([PROGRESS], hold_s=HOLD_S, sigterm=CANCELS), run_dir=str(tmp_path))
    _poll_until(run.client, lambda: bool(run.events))
    run.client.cancel()
    assert run.client.state is JobState.CANCELLING
    assert (tmp_path / "STOP").read_text(encoding="utf-8").startswith("stop requested")
    run.client.cancel()  # a second cancel changes nothing
    result = run.client.wait(timeout=10)
    assert result.state is JobState.CANCELLED and result.exit_code == 9
    assert result.message == "Stopped at step 2." and result.event == run.events[-1]
    assert result.resumable and result.run_dir == str(tmp_path)
    assert run.finished == [result]
    assert time.monotonic() - began < HOLD_S / 2  # it ended because of the signal, not of its own accord


def test_sigterm_reaches_a_worker_behind_a_launcher_that_ignores_it(start: Callable[..., Run]) -> None:
    """``PythonSlicer`` runs the worker as its child and forwards no signal: the client signals the whole tree."""
    run = start(FakeWorker([PROGRESS], hold_s=HOLD_S, sigterm=CANCELS, behind_launcher=True))
    _poll_until(run.client, lambda: bool(run.events))
    run.client.cancel()
    result = run.client.wait(timeout=10)
    assert result.state is JobState.CANCELLED and result.exit_code == 9  # the worker's code, through its launcher
    assert result.message == "Stopped at step 2." and not result.resumable  # no run folder: prediction


def test_a_worker_ended_by_sigterm_without_reporting_counts_as_cancelled(start: Callable[..., Run]) -> None:
    run = start(FakeWorker([PROGRESS], hold_s=HOLD_S, sigterm="default"))
    _poll_until(run.client, lambda: bool(run.events))
    run.client.cancel()
    result = run.client.wait(timeout=10)
    assert result.state is JobState.CANCELLED and result.exit_code == -signal.SIGTERM
    assert result.message == "Stopped; the last periodic checkpoint was kept." and result.event is None


@pytest.mark.parametrize(
    ("last", "code", "state"),
    [({"event": "finished", "model": "m"}, 0, JobState.FINISHED),
     ({"event": "error", "kind": "data", "message": "No labels.", "exit_code": 3}, 3, JobState.FAILED)],
    ids=["finished", "failed"],
)  # fmt: skip
def test_a_job_that_finishes_or_fails_while_it_is_cancelled_keeps_its_own_end(
    start: Callable[..., Run], last: dict[str, Any], code: int, state: JobState
) -> None:
    """The last step ends as the SIGTERM comes: its own final event decides, not the cancel."""
    run = start(FakeWorker([PROGRESS], hold_s=HOLD_S, sigterm=([last], code)))
    _poll_until(run.client, lambda: bool(run.events))
    run.client.cancel()
    assert run.client.state is JobState.CANCELLING
    result = run.client.wait(timeout=10)
    assert result.state is state and result.exit_code == code and result.event == run.events[-1]
    assert run.finished == [result]


def test_an_overdue_cancel_kills_the_whole_process_tree(start: Callable[..., Run]) -> None:
    # both the launcher and the worker ignore SIGTERM: only a kill of the tree ends them
    fake = FakeWorker([("pid", ""), PROGRESS], hold_s=HOLD_S, sigterm="ignore", behind_launcher=True)
    run = start(fake, kill_grace_s=0.3)
    _poll_until(run.client, lambda: bool(run.events))
    worker = int(run.logs[0])
    launcher = run.client._process.pid
    assert worker != launcher
    began = time.monotonic()
    run.client.cancel()
    result = run.client.wait(timeout=10)
    assert 0.3 <= time.monotonic() - began < 5
    assert result.state is JobState.CANCELLED and "checkpoint" in result.message
    assert _gone(launcher) and _gone(worker)
    assert len(run.finished) == 1


def test_kill_stops_at_once_without_waiting_for_the_grace(start: Callable[..., Run]) -> None:
    run = start(FakeWorker([("pid", ""), PROGRESS], hold_s=HOLD_S, sigterm="ignore"))
    _poll_until(run.client, lambda: bool(run.events))
    run.client.kill()
    assert run.client.state is JobState.CANCELLING
    result = run.client.wait(timeout=10)
    assert result.state is JobState.CANCELLED and result.message == "Stopped; the last periodic checkpoint was kept."
    assert _gone(int(run.logs[0]))
    assert result.exit_code == -signal.SIGKILL  # the kill does not swallow the worker's exit status
    run.client.kill()  # after the end: nothing happens
    assert run.finished == [result]


def test_wait_gives_up_after_its_timeout_and_the_job_goes_on(start: Callable[..., Run]) -> None:
    run = start(FakeWorker([PROGRESS], hold_s=HOLD_S, sigterm="ignore"))
    with pytest.raises(TimeoutError, match=r"did not finish within 0.2 s \(state: running\)"):
        run.client.wait(timeout=0.2, interval=0.01)
    assert run.client.state is JobState.RUNNING and run.finished == []
    run.client.kill()
    assert run.client.wait(timeout=10).state is JobState.CANCELLED


# --- how a job ends -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("last", "code", "state", "message"),
    [
        ({"event": "finished"}, 0, JobState.FINISHED, "Finished."),
        ({"event": "error", "kind": "data", "message": "No label in case a.", "exit_code": 3}, 3, JobState.FAILED,
         "No label in case a."),
        ({"event": "cancelled", "message": "Stopped by the user."}, 9, JobState.CANCELLED, "Stopped by the user."),
        (None, 9, JobState.CANCELLED, "Cancelled; the last checkpoint was kept."),
        (None, 0, JobState.FAILED, "The worker exited with code 0 without reporting a result."),
        (None, 2, JobState.FAILED, "The worker exited with code 2 without reporting a result."),
        (None, -signal.SIGKILL, JobState.FAILED, "The worker was killed by signal 9 without reporting a result."),
        ({"event": "finished"}, 1, JobState.FAILED,  # it said finished, then crashed on the way out
         "The worker reported the job finished but then exited with code 1."),
    ],
    ids=["finished", "error event", "cancelled event", "exit 9", "exit 0 silent", "exit 2 silent", "sigkill",
         "finished then exit 1"],
)  # fmt: skip
def test_the_final_event_and_the_exit_code_decide_how_a_job_ended(
    start: Callable[..., Run], tmp_path: Path, last: dict[str, Any] | None, code: int, state: JobState,
    message: str | None,
) -> None:  # fmt: skip
    run = start(FakeWorker([PROGRESS] + ([last] if last else []), exit_code=code), run_dir=str(tmp_path))
    result = run.client.wait(timeout=10)
    assert result.state is state and result.exit_code == code
    assert message is None or result.message == message
    assert result.event == (run.events[-1] if last else None)
    assert result.resumable == (state is not JobState.FINISHED)  # a training run that stopped early can resume
    assert run.finished == [result]


def test_a_crash_without_a_final_event_shows_the_last_output(start: Callable[..., Run]) -> None:
    output = [PROGRESS, ("stderr", "Traceback (most recent call last):"), ("stderr", "segfault in the encoder")]
    run = start(FakeWorker(output, exit_code=1))
    result = run.client.wait(timeout=10)
    assert result.state is JobState.FAILED and result.exit_code == 1 and result.event is None
    assert result.message == (
        "The worker exited with code 1 without reporting a result. Its last output:\n"
        "Traceback (most recent call last):\nsegfault in the encoder"
    )
    assert run.logs == ["Traceback (most recent call last):", "segfault in the encoder"]


def test_only_the_last_ten_lines_of_output_go_into_the_message(start: Callable[..., Run]) -> None:
    lines = [f"line {n}" for n in range(40)]
    run = start(FakeWorker([("stderr", line) for line in lines], exit_code=1))
    result = run.client.wait(timeout=10)
    assert run.logs == lines  # on_log sees everything
    assert result.message.endswith("Its last output:\n" + "\n".join(lines[-10:]))
    assert "line 29" not in result.message


def test_an_undecodable_byte_does_not_stop_the_reader(start: Callable[..., Run], tmp_path: Path) -> None:
    # a library printing in the console's code page: the reader must go on, or the pipe fills and the worker blocks
    finished_line = event_line({"event": "finished", "output": "x"})
    script = tmp_path / "latin.py"
    script.write_text(
        "import sys\n"
        "sys.stdout.buffer.write(b'caf\\xe9 au lait\\n')\n"
        "sys.stdout.buffer.write(('x' * 70000 + '\\n').encode())\n"  # more than a pipe holds
        f"print({finished_line!r}, flush=True)\n",
        encoding="utf-8",
    )
    run = start(default_launcher, args=[sys.executable, str(script)])
    result = run.client.wait(timeout=10)
    assert result.state is JobState.FINISHED and result.event is not None and result.event["output"] == "x"
    assert run.logs[0] == "caf\ufffd au lait" and len(run.logs[1]) == 70000


# --- the command line and environment of the worker -------------------------------------------------------------


def test_worker_command_needs_exactly_one_source() -> None:
    for wrong in ({}, {"job": "j.json", "resume": "runs/a"}, {"job": "j.json", "list_devices": True}):
        with pytest.raises(ValueError, match="exactly one"):
            worker_command(sys.executable, **wrong)  # type: ignore[arg-type]
    assert worker_command("py", job="j.json") == ["py", "-u", "-m", "samtune.worker", "--job", "j.json"]
    assert worker_command("py", resume="runs/a")[-2:] == ["--resume", "runs/a"]
    assert worker_command("py", list_devices=True)[-1] == "--list-devices"


def test_the_worker_environment_asks_for_utf8_output() -> None:
    assert WORKER_ENV["PYTHONIOENCODING"] == "utf-8" and WORKER_ENV["PYTHONUNBUFFERED"] == "1"


def test_the_default_launcher_merges_stderr_and_starts_a_new_session(tmp_path: Path) -> None:
    code = "import os, sys; print(os.getsid(0), os.environ['SAMTUNE_PROBE']); print('to stderr', file=sys.stderr)"
    process = default_launcher([sys.executable, "-c", code], {"SAMTUNE_PROBE": "yes"})
    out, _ = process.communicate(timeout=10)
    session, probe = out.splitlines()[0].split()
    assert probe == "yes" and "to stderr" in out
    assert int(session) == process.pid != os.getsid(0)  # its own session: a signal to us does not reach it
