"""Real-data study: which CPU preset wins with how many labels, on la_heart_dev (left atrium, LGE MRI).

Training data, from the first three volumes of ``cases.txt`` (the training pool):

* ``s4``   - 4 painted slices of one volume (evenly spaced through the atrium; the rest unpainted);
* ``s8``   - 8 painted slices of one volume;
* ``vol1`` - one fully labelled volume (88 slices);
* ``vol3`` - three fully labelled volumes.

Repeat ``r`` uses pool volume ``r`` (``s4``, ``s8``, ``vol1``) and seed ``r``. Presets: every preset
that runs on a CPU with LiteMedSAM (``cpu_quick``; ``blo_sam``, the few-slice preset, on the
slice-level budgets and - with fewer epochs, see ``BLO_SAM_BIG_EPOCHS`` - on one volume).

Test data: the last ``--test-cases`` volumes of ``cases.txt``, whole, never trained on. Per test
volume: foreground Dice and NSD (1 mm) of automatic prediction; references: zero-shot automatic and
zero-shot box-prompted (a tight box from the reference on every slice that shows the atrium: the
usual upper bound of prompted SAM). Every model shares LiteMedSAM's frozen image encoder, so each
slice is encoded once (``--runtime``; ``auto`` is ONNX Runtime when installed, equal to PyTorch within
float32 rounding; embeddings already in ``--cache-dir`` from another fp32 runtime are reused and the
results name their producer) and reused by every model; training time is reported as the decoder training
time plus the encoder time its labelled slices cost (slices x measured seconds per slice).

Two prediction options are evaluated on the same predictions: keeping the largest 3D connected
component (``PredictConfig.largest_component``), and slice search (``PredictConfig.slice_search``):
which slices a coarse-to-fine search would have segmented, and the Dice it would have given.

The data is never copied; embeddings may be cached outside the repository (``--cache-dir``).

    .venv/bin/python benchmarks/study_la_heart.py --data ../shared/data/la_heart_dev \\
        --json benchmarks/results/study_la_heart.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import (
    AXIS,
    MemoEncoder,
    case_ids,
    encode_volume,
    load_case,
    machine,
    masks_from_embeddings,
    painted_case,
    write_results,
)

from samtune.data import Volume
from samtune.data.pipeline import slice_grid
from samtune.metrics import dice, normalized_surface_dice
from samtune.models import SamModel, build_model
from samtune.models.runtime import encoder_runtime
from samtune.predict import boxes_from_label, keep_largest_component, search_slices
from samtune.predict.decode import decode_prompted
from samtune.train import TrainingCase, fine_tune, load_preset

BUDGETS = {"s4": 4, "s8": 8, "vol1": 88, "vol3": 264}  # labelled slices (vol: 88 per volume)
BLO_SAM_BIG_EPOCHS = 10  # blo_sam's 60 epochs on a whole volume would take ~25 min on 2 cores
SEARCH_STEPS = (4, 8)


def training_cases(budget: str, repeat: int, pool: list[str], data: dict[str, tuple[Volume, Volume]]) -> list[Any]:
    if budget in ("s4", "s8"):
        case, _ = painted_case(pool[repeat], *data[pool[repeat]], BUDGETS[budget])
        return [case]
    chosen = pool[repeat : repeat + 1] if budget == "vol1" else pool[:3]
    return [TrainingCase(c, *data[c], structure="left atrium", value=1, fully_labelled=True) for c in chosen]


@torch.no_grad()
def box_masks(model: SamModel, embeddings: torch.Tensor, grid: Any, reference: np.ndarray) -> np.ndarray:
    prompts = boxes_from_label(reference, axis=0)
    out = np.zeros(reference.shape, dtype=bool)
    for s, prompt in prompts.items():
        logits = decode_prompted(model, embeddings[s : s + 1].float(), [prompt], grid.resize.apply_coords)
        out[s] = grid.logits_to_masks(logits)[0]
    return out


def scores(masks: np.ndarray, reference: np.ndarray, spacing: tuple[float, ...]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "dice": dice(masks, reference),
        "nsd": normalized_surface_dice(masks, reference, spacing=spacing, tolerance_mm=1.0),
        "foreground_slices": int(masks.reshape(masks.shape[0], -1).any(1).sum()),
    }
    largest = keep_largest_component(masks)  # PredictConfig(largest_component=True)
    row["lcc_dice"] = dice(largest, reference)
    row["lcc_nsd"] = normalized_surface_dice(largest, reference, spacing=spacing, tolerance_mm=1.0)
    for step in SEARCH_STEPS:
        searched = search_slices(list(range(masks.shape[0])), step, lambda b: [bool(masks[s].any()) for s in b])
        kept = np.zeros_like(masks)
        kept[searched] = masks[searched]
        row[f"search{step}_dice"] = dice(kept, reference)
        row[f"search{step}_slices"] = len(searched)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the la_heart_dev folder")
    parser.add_argument("--budgets", nargs="+", default=list(BUDGETS), choices=list(BUDGETS))
    parser.add_argument("--presets", nargs="+", default=["cpu_quick", "blo_sam"])
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the slice-level budgets (s4, s8)")
    parser.add_argument("--volume-repeats", type=int, default=3, help="repeats of vol1 (vol3 always runs once)")
    parser.add_argument("--test-cases", type=int, default=6)
    parser.add_argument("--runtime", default="auto", help="encoder runtime for all embeddings")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="s4 and s8, one repeat, cpu_quick, 2 test volumes")
    parser.add_argument("--cache-dir", type=Path, help="embedding cache outside the repository")
    parser.add_argument("--json", type=Path, required=True, help="results file (rewritten after every run)")
    parser.add_argument("--resume", action="store_true", help="keep the runs already in --json; add the missing ones")
    args = parser.parse_args()
    if args.quick:
        args.budgets, args.presets, args.repeats, args.test_cases = ["s4", "s8"], ["cpu_quick"], 1, 2
    torch.set_num_threads(args.threads)

    ids = case_ids(args.data)
    pool, test_ids = ids[:3], ids[-args.test_cases :]
    base = build_model("litemedsam", device="cpu")
    runtime = encoder_runtime(base, args.runtime)
    memo = MemoEncoder(runtime.encode)
    results: dict[str, Any] = {
        "machine": machine(args.threads),
        "backbone": "litemedsam",
        "encoder_runtime": runtime.name,
        "pool": pool,
        "test_cases": test_ids,
        "budgets": {b: BUDGETS[b] for b in args.budgets},
        "search_steps": list(SEARCH_STEPS),
        "runs": [],
    }

    if args.resume and args.json.is_file():
        previous = json.loads(args.json.read_text(encoding="utf-8"))
        if previous["test_cases"] != test_ids or previous["pool"] != pool:
            parser.error(f"{args.json} holds another split; --resume needs the same --test-cases")
        results["runs"] = previous["runs"]
    done = {(r["method"], r["budget"], r["repeat"]) for r in results["runs"]}

    def save() -> None:
        write_results(args.json, results)

    data: dict[str, tuple[Volume, Volume]] = {c: load_case(args.data, c) for c in pool + test_ids}
    encode_seconds: list[float] = []
    test: dict[str, tuple[torch.Tensor, Any, np.ndarray, tuple[float, ...]]] = {}
    pool_needed = [c for c in pool if any(b.startswith("vol") for b in args.budgets)]
    producers: dict[str, str] = {}
    for case_id in pool_needed + test_ids:
        image, label = data[case_id]
        cache = args.cache_dir / f"{case_id}-litemedsam-{AXIS}-{runtime.name}.pt" if args.cache_dir else None
        if cache is not None and not cache.is_file():  # embeddings cached by another fp32 runtime are reused
            cache = next(iter(sorted(args.cache_dir.glob(f"{case_id}-litemedsam-{AXIS}-*.pt"))), cache)
        producers[case_id] = cache.stem.rsplit("-", 1)[1] if cache is not None and cache.is_file() else runtime.name
        images, embeddings, seconds = encode_volume(image, base, runtime.encode, cache=cache)
        if seconds:
            encode_seconds.append(seconds / images.shape[0])
            if cache is not None:
                (cache.parent / f"{cache.stem}.seconds").write_text(f"{seconds / images.shape[0]}")
        elif cache is not None and (cache.parent / f"{cache.stem}.seconds").is_file():
            encode_seconds.append(float((cache.parent / f"{cache.stem}.seconds").read_text()))
        memo.add(images, embeddings)
        if case_id in test_ids:
            grid = slice_grid(image, input_size=base.input_size, axis=AXIS)
            test[case_id] = (embeddings, grid, label.array == 1, image.spacing[::-1])
        print(f"embeddings of {case_id}: {producers[case_id]}, {seconds:.0f} s (0: from the cache)", flush=True)
    per_slice = statistics.median(encode_seconds) if encode_seconds else None
    results["encoder_s_per_slice"] = per_slice
    results["embeddings_from"] = producers

    def evaluate(model: SamModel, name: str, budget: str, repeat: int, **extra: Any) -> None:
        per_case = {}
        for case_id, (embeddings, grid, reference, spacing) in test.items():
            masks = masks_from_embeddings(model, embeddings, grid)
            per_case[case_id] = scores(masks, reference, spacing)
        run = {"method": name, "budget": budget, "repeat": repeat, "cases": per_case, **extra}
        results["runs"].append(run)
        save()
        mean = np.mean([v["dice"] for v in per_case.values()])
        print(f"{name} {budget} r{repeat}: Dice {mean:.3f} {extra.get('train_seconds', 0):.0f} s", flush=True)

    if ("zero_shot_automatic", "none", 0) not in done:
        evaluate(base, "zero_shot_automatic", "none", 0, train_seconds=0.0)
    boxed = {}
    for case_id, (embeddings, grid, reference, spacing) in (
        test.items() if ("zero_shot_box", "none", 0) not in done else []
    ):
        masks = box_masks(base, embeddings, grid, reference)
        boxed[case_id] = {
            "dice": dice(masks, reference),
            "nsd": normalized_surface_dice(masks, reference, spacing=spacing),
        }
    if boxed:
        results["runs"].append({"method": "zero_shot_box", "budget": "none", "repeat": 0, "cases": boxed})
        save()

    for budget in args.budgets:
        repeats = 1 if budget == "vol3" else (args.volume_repeats if budget == "vol1" else args.repeats)
        for preset in args.presets:
            if preset == "blo_sam" and budget == "vol3":
                continue  # the few-slice preset; see BLO_SAM_BIG_EPOCHS
            for repeat in range(repeats):
                if (preset, budget, repeat) in done:
                    continue
                cases = training_cases(budget, repeat, pool, data)
                overrides: dict[str, Any] = {"device": "cpu", "seed": repeat, "slices": {"axis": AXIS}}
                overrides["val_fraction"] = 0.0  # one training volume or fewer: no validation split
                if preset == "blo_sam" and budget == "vol1":
                    overrides["epochs"] = BLO_SAM_BIG_EPOCHS
                config = load_preset(preset).train_config(overrides)
                model = build_model("litemedsam", device="cpu")
                model.image_encoder = memo
                seen = memo.hits + memo.misses
                started = time.perf_counter()
                outcome = fine_tune(cases, config, model=model)
                seconds = time.perf_counter() - started
                labelled = sum(
                    c.label.shape[0]
                    if c.fully_labelled
                    else int(c.label.array.reshape(c.label.shape[0], -1).any(1).sum())
                    for c in cases
                )
                encoded = memo.hits + memo.misses - seen  # slices the run's embedding cache encoded
                evaluate(
                    outcome.model, preset, budget, repeat,
                    train_seconds=seconds, epochs=config.epochs, labelled_slices=labelled,
                    encoded_slices=encoded, encode_seconds=encoded * (per_slice or 0.0),
                    train_volumes=[c.case_id for c in cases],
                )  # fmt: skip
    print(json.dumps({"saved": str(args.json)}))


if __name__ == "__main__":
    main()
