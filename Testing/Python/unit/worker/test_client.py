"""The background-job client against the real worker (subprocesses, tiny models), driven by a plain loop."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from samtune.data import write_phantom_cases
from samtune.worker.client import JobResult, JobState, WorkerClient, worker_command
from samtune.worker.events import event_line, parse_event_line

OVERRIDES = {
    "backbone": "sam_vit_b", "device": "cpu", "batch_size": 2, "lr": 0.01, "warmup_steps": 1,
    "val_fraction": 0.34, "augment": {"enabled": False}, "patience": 0,
}  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("client")
    write_phantom_cases(folder)
    return folder


def _job(folder: Path, run: str, **overrides: Any) -> str:
    job = {"version": 1, "kind": "train", "preset": "cpu_quick", "tiny": True, "manifest": "manifest.json",
           "run_dir": run, "overrides": {**OVERRIDES, **overrides}}  # fmt: skip
    path = folder / f"{run}.job.json"
    path.write_text(json.dumps(job), encoding="utf-8")
    return str(path)


def _client(args: list[str], **kwargs: Any) -> tuple[WorkerClient, list[JobResult], list[str]]:
    finished: list[JobResult] = []
    logs: list[str] = []
    client = WorkerClient(
        args, env={"PYTHONUNBUFFERED": "1"}, on_finished=finished.append, on_log=logs.append, **kwargs
    )
    return client, finished, logs


def test_parse_event_line_accepts_only_protocol_lines():
    line = event_line({"event": "progress", "stage": "train", "step": 3, "total": 9})
    assert parse_event_line(line + "\n")["step"] == 3
    assert parse_event_line("Traceback (most recent call last):") is None
    assert parse_event_line('{"v": 2, "event": "progress"}') is None
    assert parse_event_line('{"v": 1, "event": "nonsense"}') is None
    assert parse_event_line("{not json") is None


def test_a_training_job_runs_to_the_end_and_finishes_once(data: Path):
    seen: list[str] = []
    client, finished, _ = _client(worker_command(sys.executable, job=_job(data, "full", epochs=3)),
                                  run_dir=str(data / "full"))  # fmt: skip
    client.on_event = lambda e: seen.append(e["event"])
    assert client.state is JobState.IDLE
    client.start()
    assert client.state is JobState.RUNNING
    with pytest.raises(RuntimeError, match="already started"):
        client.start()
    result = client.wait(timeout=300)
    client.poll()  # polling after the end changes nothing
    assert result.state is JobState.FINISHED and result.exit_code == 0
    assert finished == [result]
    assert seen[0] == "started" and seen[-1] == "finished"
    assert "progress" in seen and seen.count("metrics") == 3
    assert client.fraction == 1.0
    assert Path(result.event["model"], "model_card.json").is_file()
    assert not result.resumable


def test_cancel_keeps_a_checkpoint_and_the_run_resumes(data: Path):
    run = data / "cancel"
    client, finished, _ = _client(worker_command(sys.executable, job=_job(data, "cancel", epochs=40)), run_dir=str(run))
    client.start()
    deadline = time.monotonic() + 300
    while not any(e["event"] == "progress" and e.get("epoch", 0) >= 2 for e in client.events):
        client.poll()
        assert time.monotonic() < deadline and not client.state.done
        time.sleep(0.02)
    client.cancel()
    assert client.state is JobState.CANCELLING
    result = client.wait(timeout=120)
    assert result.state is JobState.CANCELLED and result.exit_code == 9
    assert result.resumable and result.run_dir == str(run)
    assert any(e["event"] == "checkpoint" and e["reason"] == "cancelled" for e in client.events)
    assert len(finished) == 1

    (run / "STOP").unlink(missing_ok=True)
    resumed, _, _ = _client(worker_command(sys.executable, resume=str(run)), run_dir=str(run))
    resumed.start()
    again = resumed.wait(timeout=300)
    assert again.state is JobState.FINISHED, again.message
    assert any(e["event"] == "log" and "esum" in e["message"] for e in resumed.events)


def test_kill_stops_the_whole_process_tree(tmp_path: Path):
    # a worker stand-in that starts a child and ignores SIGTERM: only a kill of the tree ends it
    script = tmp_path / "stubborn.py"
    script.write_text(
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(600)\n",
        encoding="utf-8",
    )
    client, finished, logs = _client([sys.executable, str(script)], kill_grace_s=0.5)
    client.start()
    while not logs:
        client.poll()
        time.sleep(0.02)
    child = int(logs[0])
    client.cancel()
    result = client.wait(timeout=60)
    assert result.state is JobState.CANCELLED and "checkpoint" in result.message
    assert not psutil.pid_exists(client._process.pid)
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    assert len(finished) == 1


def test_a_failing_job_reports_the_workers_explanation(data: Path, tmp_path: Path):
    job = tmp_path / "bad.job.json"
    job.write_text(json.dumps({"version": 1, "kind": "train", "preset": "cpu_quick", "tiny": True,
                               "manifest": str(tmp_path / "missing.json"), "run_dir": "run"}))  # fmt: skip
    client, finished, _ = _client(worker_command(sys.executable, job=str(job)), run_dir=str(tmp_path / "run"))
    client.start()
    result = client.wait(timeout=120)
    assert result.state is JobState.FAILED and result.exit_code == 3
    assert "missing.json" in result.message
    assert result.event["event"] == "error"


def test_a_crash_without_a_result_shows_the_last_output():
    args = [sys.executable, "-c", "import sys; print('segfault in the encoder', file=sys.stderr); sys.exit(1)"]
    client, finished, logs = _client(args)
    client.start()
    result = client.wait(timeout=60)
    assert result.state is JobState.FAILED and result.exit_code == 1
    assert "exited with code 1" in result.message and "segfault in the encoder" in result.message
    assert logs == ["segfault in the encoder"]


def test_worker_command_needs_exactly_one_source():
    with pytest.raises(ValueError, match="exactly one"):
        worker_command(sys.executable)
    assert worker_command("py", resume="runs/a")[-2:] == ["--resume", "runs/a"]


def test_an_undecodable_byte_does_not_stop_the_reader(tmp_path: Path):
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
    client, finished, logs = _client([sys.executable, str(script)])
    client.start()
    result = client.wait(timeout=60)
    assert result.state is JobState.FINISHED and result.event["output"] == "x"
    assert logs[0] == "caf\ufffd au lait" and len(logs[1]) == 70000


def test_the_worker_environment_asks_for_utf8_output():
    from samtune.worker.client import WORKER_ENV

    assert WORKER_ENV["PYTHONIOENCODING"] == "utf-8" and WORKER_ENV["PYTHONUNBUFFERED"] == "1"
