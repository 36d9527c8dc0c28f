"""Worker overhead and multi-process throughput on the CPU.

1. The same training job run in-process (``run_train_job``) and through the background worker
   (``python -m samtune.worker --job``, a fresh process that imports torch and the models): the
   difference is the worker's overhead (process start, imports, JSON events on a pipe).
2. The same job under ``torchrun`` with 1 and with 2 gloo processes (same global batch): wall time
   and training throughput (slices per second over the training steps).

Default job: ``cpu_quick`` on LiteMedSAM (real bundled weights) with four 12-slice phantoms, so the
figures include the embedding cache (sharded over the processes). ``--tiny`` uses a tiny random
model instead (then nearly all time is overhead).

    .venv/bin/python benchmarks/bench_worker.py --json benchmarks/results/worker_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import machine, write_results

from samtune.data import write_phantom_cases


def write_job(folder: Path, run: str, args: argparse.Namespace) -> Path:
    overrides = {"device": "cpu", "epochs": args.epochs, "batch_size": 4, "val_fraction": 0.0}
    if args.tiny:
        overrides["backbone"] = "sam_vit_b"
    job = {"kind": "train", "preset": "cpu_quick", "tiny": args.tiny, "manifest": "manifest.json", "run_dir": run,
           "overrides": overrides}  # fmt: skip
    path = folder / f"{run}.json"
    path.write_text(json.dumps(job), encoding="utf-8")
    return path


def training_seconds(run: Path) -> tuple[float, int]:
    """Time between the first and last training step, and the steps, from the run's events."""
    events = [json.loads(line) for line in (run / "events.jsonl").read_text(encoding="utf-8").splitlines()]
    steps = [e for e in events if e["event"] == "progress" and e.get("stage") == "train"]
    from datetime import datetime

    first, last = (datetime.fromisoformat(steps[i]["time"]) for i in (0, -1))
    return (last - first).total_seconds(), len(steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="tiny random model instead of LiteMedSAM")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="samtune-bench-worker-"))
    write_phantom_cases(folder, args.cases, shape=(12, 96, 96))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    results: dict[str, Any] = {"machine": machine(2), "runs": {}}

    def timed(name: str, command: list[str] | None, threads: int = 2) -> None:
        walls, trains = [], []
        for repeat in range(args.repeats):
            run = f"{name}-{repeat}"
            job = write_job(folder, run, args)
            started = time.perf_counter()
            if command is None:  # in-process
                import torch

                from samtune.worker.jobs import load_job
                from samtune.worker.train_job import run_train_job

                torch.set_num_threads(threads)
                run_train_job(load_job(job), emit=lambda event: None)  # type: ignore[arg-type]
            else:
                subprocess.run([*command, str(job)], check=True, env={**env, "OMP_NUM_THREADS": str(threads)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            walls.append(time.perf_counter() - started)
            seconds, steps = training_seconds(folder / run)
            trains.append(seconds / max(1, steps - 1))
            shutil.rmtree(folder / run)
        results["runs"][name] = {"wall_s": statistics.median(walls), "step_s": statistics.median(trains)}
        print(f"{name}: wall {statistics.median(walls):.1f} s, {statistics.median(trains):.3f} s per step", flush=True)

    worker = [sys.executable, "-m", "samtune.worker", "--job"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    timed("in_process", None)
    timed("worker", worker)
    timed("torchrun_1x2threads", [*torchrun, "--nproc_per_node=1", "-m", "samtune.worker", "--job"], threads=2)
    timed("torchrun_2x1thread", [*torchrun, "--nproc_per_node=2", "-m", "samtune.worker", "--job"], threads=1)
    runs = results["runs"]
    results["worker_overhead_s"] = runs["worker"]["wall_s"] - runs["in_process"]["wall_s"]
    results["two_process_speedup_wall"] = runs["torchrun_1x2threads"]["wall_s"] / runs["torchrun_2x1thread"]["wall_s"]
    results["two_process_speedup_step"] = runs["torchrun_1x2threads"]["step_s"] / runs["torchrun_2x1thread"]["step_s"]
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=2))
    write_results(args.json, results)
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
