"""Whole-volume speed where clinicians wait, on held-out la_heart_dev volumes: cold and warm, slice search.

Two models are trained first (from the study's pool, never a test volume): ``cpu_quick`` on 8 painted
slices of the first pool volume (the default preset: no presence head), and the study's
``decoder_refine`` configuration on that whole volume (presence head and box-prompted refinement).
Then, on each held-out volume (the study's last 10), with an empty embedding store at first:

* **cold**: ``decoder_refine``, whole volume, every slice encoded (this fills the store), timed end to
  end; on the first ``--cold-search`` volumes also cold with slice search (another empty store);
* **fp32**: on the first ``--fp32-volumes`` volumes, the same without the store (float32 embeddings,
  as before the store): the Dice change float16 storage makes;
* **warm**: both models, every slice and slice search with steps 4 and 8, from the stored
  embeddings: time, slices segmented, Dice against the reference, Dice change from the full pass;
  and ``cpu_quick`` once more without its refinement passes (``refine=0``: one decoder pass per
  slice), which is what its refinement by the pretrained decoder costs and adds;
* **int8**: both models warm again, every slice and slice search with step 8, with the int8 mask
  decoder (``decoder_precision="int8"``): time and the Dice change from the fp32 decoder's run.

Everything runs in this process, one run after another (medians and ratios come from one run). The
store lives outside the repository (``--store``, default a temporary folder, removed at the end).

    .venv/bin/python benchmarks/bench_volume_speed.py --data ../shared/data/la_heart_dev \\
        --json benchmarks/results/volume_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from common import AXIS, case_ids, load_case, machine, painted_case, peak_rss_mb, write_results

from samtune.data.pipeline import SliceConfig
from samtune.library import load_trained_model
from samtune.metrics import dice
from samtune.models.embedding_store import EmbeddingStore
from samtune.models.runtime import decoder_runtime
from samtune.predict import PredictConfig, predict_volume
from samtune.train import TrainingCase, fine_tune, load_preset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from study_la_heart import DECODER_REFINE  # noqa: E402


class CountingStore(EmbeddingStore):
    """An embedding store that counts lookups (slices segmented) and misses (slices encoded)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, max_bytes=64 << 30)
        self.lookups = 0
        self.misses = 0

    def get(self, key: str) -> torch.Tensor | None:
        self.lookups += 1
        found = super().get(key)
        self.misses += found is None
        return found

    def counted(self) -> tuple[int, int]:
        counts = (self.lookups, self.misses)
        self.lookups = self.misses = 0
        return counts


def train(name: str, cases: list[TrainingCase], overrides: dict[str, Any], models: Path | None) -> tuple[Any, float]:
    """Train (or, with ``--models`` holding it from an earlier run, load) one model; its training seconds."""
    folder = models / name if models is not None else None
    if models is not None:
        models.mkdir(parents=True, exist_ok=True)
    if folder is not None and (folder / "train_seconds.json").is_file():
        model, _ = load_trained_model(folder)
        return model.eval(), float(json.loads((folder / "train_seconds.json").read_text())["s"])
    config = load_preset("cpu_quick").train_config(
        {"device": "cpu", "seed": 0, "slices": {"axis": AXIS}, "val_fraction": 0.0, **overrides}
    )
    started = time.perf_counter()
    outcome = fine_tune(cases, config, out_dir=folder)
    seconds = time.perf_counter() - started
    if folder is not None:
        (folder / "train_seconds.json").write_text(json.dumps({"s": seconds}))
    print(f"trained {name} in {seconds:.0f} s", flush=True)
    return outcome.model.eval(), seconds


def run(
    model: Any,
    image: Any,
    reference: Any,
    store: EmbeddingStore | bool,
    search: int,
    refine: int | None = None,
    precision: str = "fp32",
) -> dict[str, Any]:
    config = PredictConfig(slices=SliceConfig(axis=AXIS), slice_search=search, refine=refine,
                           decoder_precision=precision)  # fmt: skip
    started = time.perf_counter()
    mask = predict_volume(model, image, config, store=store).array > 0
    seconds = time.perf_counter() - started
    row: dict[str, Any] = {"s": seconds, "dice": dice(mask, reference)}
    if isinstance(store, CountingStore):
        row["segmented"], row["encoded"] = store.counted()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="la_heart_dev folder (read in place, never copied)")
    parser.add_argument("--test-cases", type=int, default=10, help="held-out volumes (the last of cases.txt)")
    parser.add_argument("--fp32-volumes", type=int, default=2, help="volumes also run without the store")
    parser.add_argument("--cold-search", type=int, default=2, help="volumes also run cold with slice search")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--store", type=Path, help="embedding store folder (default: a temporary one)")
    parser.add_argument("--models", type=Path, help="keep the trained models here and reuse them in later runs")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ids = case_ids(args.data)
    pool, test = ids[:10], ids[-args.test_cases :]
    root = args.store or Path(tempfile.mkdtemp(prefix="samtune-bench-store-"))
    store = CountingStore(root)
    os.environ["SAMTUNE_EMBEDDING_STORE"] = str(root)  # training's embedding cache uses the same store
    os.environ["SAMTUNE_EMBEDDING_STORE_MB"] = str(64 << 10)
    figures: dict[str, Any] = {"machine": machine(args.threads), "backbone": "litemedsam", "pool_case": pool[0]}
    try:
        image, label = load_case(args.data, pool[0])
        painted, _ = painted_case(pool[0], image, label, 8)
        whole = TrainingCase(pool[0], image, label, structure="left atrium", value=1, fully_labelled=True)
        models = {}
        models["cpu_quick"], figures["cpu_quick_train_s"] = train("cpu_quick", [painted], {}, args.models)
        models["decoder_refine"], figures["decoder_refine_train_s"] = train(
            "decoder_refine", [whole], DECODER_REFINE, args.models
        )
        # The int8 decoders are made (and checked against fp32) here, once, before anything is timed.
        figures["int8_decoders"] = {
            name: decoder_runtime(model, precision="int8").summary for name, model in models.items()
        }
        store.counted()
        volumes: dict[str, Any] = {}
        for n, case_id in enumerate(test):
            image, label = load_case(args.data, case_id)
            reference = label.array == 1
            row: dict[str, Any] = {"cold": run(models["decoder_refine"], image, reference, store, 0)}
            if n < args.cold_search:
                fresh = CountingStore(Path(tempfile.mkdtemp(prefix="samtune-bench-cold-")))
                row["cold_search4"] = run(models["decoder_refine"], image, reference, fresh, 4)
                shutil.rmtree(fresh.root, ignore_errors=True)
            if n < args.fp32_volumes:
                row["fp32"] = run(models["decoder_refine"], image, reference, False, 0)
                row["fp32"]["dice_change_fp16_store"] = row["cold"]["dice"] - row["fp32"]["dice"]
            variants = {**{name: (model, None, "fp32", (0, 4, 8)) for name, model in models.items()},
                        "cpu_quick_one_pass": (models["cpu_quick"], 0, "fp32", (0, 4, 8)),
                        **{f"{n}_int8": (model, None, "int8", (0, 8)) for n, model in models.items()}}  # fmt: skip
            for name, (model, refine, precision, searches) in variants.items():
                for search in searches:
                    result = run(model, image, reference, store, search, refine, precision)
                    result["dice_change_vs_full"] = result["dice"] - (row.get(f"{name}_warm") or result)["dice"]
                    key = f"{name}_warm" if search == 0 else f"{name}_warm_search{search}"
                    if precision == "int8":  # against the fp32 decoder on the same slices
                        fp32 = row[key.replace("_int8", "")]
                        result["dice_change_int8"] = result["dice"] - fp32["dice"]
                        result["speedup_int8"] = fp32["s"] / result["s"]
                    row[key] = result
            volumes[case_id] = row
            print(case_id, {k: (round(v["s"], 1), round(v["dice"], 3)) for k, v in row.items()}, flush=True)
            figures["volumes"] = volumes
            write_results(args.json, figures)
        figures["summary"] = summarise(volumes)
        figures["peak_rss_mb"] = peak_rss_mb()
        figures["store_bytes"] = store.nbytes
        write_results(args.json, figures)
        print(figures["summary"])
    finally:
        if args.store is None:
            shutil.rmtree(root, ignore_errors=True)


def summarise(volumes: dict[str, Any]) -> dict[str, Any]:
    """Median time, mean Dice, mean slices segmented/encoded, and the worst Dice change, per variant."""
    out: dict[str, Any] = {}
    names = sorted({name for row in volumes.values() for name in row})
    for name in names:
        rows = [row[name] for row in volumes.values() if name in row]
        entry: dict[str, Any] = {
            "volumes": len(rows),
            "median_s": statistics.median(r["s"] for r in rows),
            "mean_dice": statistics.fmean(r["dice"] for r in rows),
        }
        for key in ("segmented", "encoded"):
            if key in rows[0]:
                entry[f"mean_{key}"] = statistics.fmean(r[key] for r in rows)
        if "speedup_int8" in rows[0]:
            entry["median_speedup_int8"] = statistics.median(r["speedup_int8"] for r in rows)
        for key in ("dice_change_vs_full", "dice_change_fp16_store", "dice_change_int8"):
            if key in rows[0]:
                entry[f"worst_{key}"] = min(r[key] for r in rows)
                entry[f"largest_abs_{key}"] = max(abs(r[key]) for r in rows)
                entry[f"mean_{key}"] = statistics.fmean(r[key] for r in rows)
        out[name] = entry
    return out


if __name__ == "__main__":
    main()
