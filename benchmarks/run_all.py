"""Run the benchmark suite and regenerate the report.

Each benchmark runs in its own process (so peak-memory figures are its own) and writes a JSON file
into the results folder; ``report.py`` then turns every JSON file there into ``docs/benchmarks.md``
with its tables and plots. Run nothing else on the machine meanwhile: the figures are timings.

    .venv/bin/python benchmarks/run_all.py --data ../shared/data/la_heart_dev            # ~2 h on 2 cores
    .venv/bin/python benchmarks/run_all.py --quick --data ../shared/data/la_heart_dev    # ~15 min

``--quick`` runs shortened versions into ``benchmarks/results/quick/`` and writes the report there
(``docs/`` keeps the full figures). ``--only`` picks benchmarks; ``--report-only`` regenerates the
report from the JSON files already there. Without ``--data`` the la_heart_dev study and the
real-volume prediction figures are skipped (the data is never copied into the repository).
On a machine with CUDA the interactive benchmark also runs on the GPU, and ``bench_gpu.py`` records
the GPU figures.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

QUICK_LOOP = ["--data", "{data}", "--cache-dir", "{cache}", "--arms", "worst", "random", "--rounds", "1",
              "--seeds", "0", "--test-cases", "2"]  # fmt: skip
#: name -> (script, needs --data, full arguments, quick arguments); ``{json}``/``{data}`` are filled in.
BENCHMARKS: dict[str, tuple[str, bool, list[str], list[str]]] = {
    "prediction": ("bench_prediction.py", False, ["--data", "{data}"], ["--quick", "--data", "{data}"]),
    "interactive": ("bench_interactive.py", False, [], ["--slices", "3", "--clicks", "5"]),
    "training": ("bench_training.py", False, [], ["--repeats", "1", "--presets", "cpu_quick", "blo_sam"]),
    "worker": (
        "bench_worker.py",
        False,
        ["--cases", "3", "--epochs", "3", "--repeats", "1"],
        ["--cases", "2", "--epochs", "1", "--repeats", "1"],
    ),  # fmt: skip
    "volume_speed": (
        "bench_volume_speed.py",
        True,
        ["--data", "{data}"],
        ["--data", "{data}", "--test-cases", "2", "--fp32-volumes", "1", "--cold-search", "1"],
    ),  # fmt: skip
    "prediction_int8": (
        "bench_prediction.py",
        True,
        ["--int8-only", "--data", "{data}"],
        ["--int8-only", "--repeats", "2", "--data", "{data}"],
    ),  # fmt: skip
    "decoder": ("bench_decoder.py", False, [], ["--repeats", "2", "--slices", "8"]),
    "scaling": ("bench_scaling.py", False, [], ["--quick"]),
    "study_pictures": (
        "study_pictures.py",
        False,
        [],
        ["--phantoms", "36", "--test", "12", "--sizes", "8", "--seeds", "0"],
    ),
    "study_la_heart": (
        "study_la_heart.py",
        True,
        ["--data", "{data}", "--cache-dir", "{cache}"],
        ["--quick", "--data", "{data}", "--cache-dir", "{cache}"],
    ),  # fmt: skip
    "study_correction_loop": (
        "study_correction_loop.py",
        True,
        ["--data", "{data}", "--cache-dir", "{cache}"],
        QUICK_LOOP,
    ),  # fmt: skip
    "blo_sam_la_heart": (
        "bench_blo_sam.py",
        True,
        ["--data", "{data}", "--test-cases", "4", "--cache-dir", "{cache}"],
        ["--data", "{data}", "--k", "4", "--test-cases", "1", "--methods", "blo_sam_first"],
    ),  # fmt: skip
    "encoder_lora_cpu": (
        "study_encoder_lora_cpu.py",
        True,
        ["--data", "{data}"],
        ["--data", "{data}", "--runs", "lora", "--epochs", "1", "--test-cases", "2"],
    ),  # fmt: skip
}
#: Run unless named with ``--only``: the BLO-SAM ablation takes over an hour on 2 cores, encoder LoRA 45 min.
OPT_IN = {"blo_sam_la_heart", "encoder_lora_cpu"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="the la_heart_dev folder (read in place, never copied)")
    parser.add_argument("--quick", action="store_true", help="short versions, results in benchmarks/results/quick")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run only these")
    parser.add_argument("--results", type=Path, help="results folder (default benchmarks/results[/quick])")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "samtune-benchmarks",
                        help="embedding cache for the la_heart_dev scripts (outside the repository)")  # fmt: skip
    parser.add_argument("--report-only", action="store_true", help="only regenerate the report")
    args = parser.parse_args()
    results = args.results or HERE / "results" / ("quick" if args.quick else "")
    results.mkdir(parents=True, exist_ok=True)
    names = args.only or [n for n in BENCHMARKS if n not in OPT_IN]
    failed = []
    for name in [] if args.report_only else names:
        script, needs_data, full, quick = BENCHMARKS[name]
        if needs_data and args.data is None:
            print(f"[skip] {name}: needs --data", flush=True)
            continue
        arguments = quick if args.quick else full
        filled = []
        for a in arguments:
            if a == "{data}" and args.data is None:
                filled.pop()  # drop the preceding "--data"
                continue
            filled.append(a.format(data=args.data, cache=args.cache_dir))
        command = [sys.executable, "-W", "ignore", str(HERE / script), *filled, "--json", str(results / f"{name}.json")]
        print(f"[run] {name}: {' '.join(command[3:])}", flush=True)
        started = time.perf_counter()
        # Encoder figures must not be served from the per-user embedding store (the speed benchmark uses its own).
        env = {**os.environ, "SAMTUNE_EMBEDDING_STORE_MB": "0"}
        code = subprocess.run(command, cwd=ROOT, env=env).returncode
        print(f"[done] {name}: exit {code} after {time.perf_counter() - started:.0f} s", flush=True)
        if code:
            failed.append(name)
        if name == "interactive" and torch.cuda.is_available():
            gpu = [*command[:-1], str(results / "interactive_cuda.json"), "--device", "cuda"]
            failed += ["interactive (cuda)"] if subprocess.run(gpu, cwd=ROOT).returncode else []
    if not args.report_only and not args.only and torch.cuda.is_available():  # the GPU figures, one run
        gpu = [sys.executable, "-W", "ignore", str(HERE / "bench_gpu.py"), "--json", str(results / "gpu.json")]
        failed += ["gpu"] if subprocess.run(gpu, cwd=ROOT).returncode else []
    report = [sys.executable, str(HERE / "report.py"), "--results", str(results)]
    if args.quick:
        report += ["--out", str(results / "benchmarks.md"), "--images", str(results)]
    subprocess.run(report, cwd=ROOT, check=True)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
