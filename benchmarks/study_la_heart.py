"""Real-data study: automatic segmentation from few labels on la_heart_dev (left atrium, LGE MRI).

Split: the first ``--pool`` volumes of ``cases.txt`` form the training pool, the last ``--test-cases``
volumes are held out, whole, and never trained on. Budgets (labelled training data):

* ``s4``   - 4 painted slices of one volume (evenly spaced through the atrium; the rest unpainted);
* ``s8``   - 8 painted slices of one volume;
* ``s8e``  - the same, and 4 slices beyond the atrium marked empty (one click each);
* ``vol1`` - one fully labelled volume (88 slices; its empty slices are true negatives);
* ``vol3`` - three fully labelled volumes;
* ``vol8`` - eight fully labelled volumes (the end of the learning curve).

Repeat ``r`` uses seed ``r`` and the training volumes ``pool[r]`` (``s4``, ``s8``, ``vol1``),
``pool[r:r + 3]`` (``vol3``) or ``pool[:8]`` (``vol8``). No threshold is tuned on the held-out
volumes: each model's presence threshold is its own (chosen on its validation slices, or the default
0.5 without any), and every prediction option is evaluated with its default.

Methods are training configurations (``METHODS``): the former ``cpu_quick`` default, the ablation
steps that lead to the current presets (each adds one lever to the previous one), the shipped
presets, and the peer a user would pick instead: a MONAI 2D U-Net trained from scratch on the same
slices for the same wall-clock time (``benchmarks/peer_unet.py``). For every SAM model the
prediction-side levers are evaluated on the same held-out embeddings: no presence gate and no
refinement (``plain``), the presence gate alone, refinement alone, both (``default``: what the model
does when a user runs it), and both followed by keeping the largest 3D component (``lcc``).

Every SAM model shares LiteMedSAM's frozen image encoder, so each slice is encoded once
(``--runtime``; embeddings are cached outside the repository in ``--cache-dir``) and reused by every
model. Training time = the decoder training time + the encoder time its training slices cost
(slices x the measured seconds per slice), so it is what a user's run would take. Views added by
``cached_views`` are encoded during the run and counted in its time.

    .venv/bin/python benchmarks/study_la_heart.py --data ../shared/data/la_heart_dev \\
        --cache-dir ~/.cache/samtune-benchmarks --json benchmarks/results/study_la_heart.json
"""

from __future__ import annotations

import argparse
import json
import os
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
    painted_case,
    write_results,
)

from samtune.data import Volume
from samtune.data.pipeline import slice_grid
from samtune.metrics import dice, normalized_surface_dice
from samtune.models import SamModel, build_model
from samtune.models.runtime import encoder_runtime
from samtune.predict import boxes_from_label, keep_largest_component, search_slices
from samtune.predict.decode import ABSENT, automatic_passes, decode_prompted, gate_logits, mask_box
from samtune.train import TrainingCase, fine_tune, load_preset

BUDGETS = {"s4": 4, "s8": 8, "s8e": 8, "vol1": 88, "vol3": 264, "vol8": 704}  # labelled slices (88 per volume)
SEARCH_STEP = 4

#: The former ``cpu_quick`` (before the automatic-quality work): decoder LoRA rank 4, 10 % of the empty slices.
LORA = {"method": "lora", "scope": "decoder", "lora": {"rank": 4, "alpha": 4.0}, "train_modules": []}
BEFORE = {"finetune": LORA, "empty_slices": "keep_fraction", "presence_weight": 0.0, "prompt_mix": 0.0,
          "min_steps": 0, "epochs": 20, "lr": 0.005, "warmup_steps": 5}  # fmt: skip
#: The study's best configuration: the whole decoder, presence head, box-prompted steps (not a preset:
#: on the demo phantom it marks the whole unseen volume, see docs/fine-tuning.md).
DECODER_REFINE = {"finetune": {"method": "vanilla", "scope": "decoder", "train_modules": []},
                  "empty_slices": "balanced", "presence_weight": 1.0, "prompt_mix": 0.5, "epochs": 4, "min_steps": 150,
                  "lr": 0.0003, "warmup_steps": 10, "val_fraction": 0.0}  # fmt: skip
PRESENCE = {**BEFORE, "empty_slices": "balanced", "presence_weight": 1.0}
#: name -> (preset, overrides). The ablation: ``before`` -> ``a1_presence`` (true negatives, balanced,
#: and the presence head) -> ``a2_full_decoder`` (the whole decoder instead of LoRA; ``a1_lora16`` is
#: the same step with a rank-16 LoRA) -> ``cpu_quick`` (+ box-prompted steps: refinement), and its
#: variants: more cached views, a validation case.
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "before": ("cpu_quick", BEFORE),
    "a1_presence": ("cpu_quick", PRESENCE),
    "a1_lora16": ("cpu_quick", {**PRESENCE, "finetune": {**LORA, "lora": {"rank": 16, "alpha": 16.0}}}),
    "a2_full_decoder": ("cpu_quick", {**DECODER_REFINE, "prompt_mix": 0.0}),
    "decoder_refine": ("cpu_quick", DECODER_REFINE),
    "decoder_refine_views": ("cpu_quick", {**DECODER_REFINE, "cached_views": 2}),
    "decoder_refine_val": ("cpu_quick", {**DECODER_REFINE, "val_fraction": 0.34}),
    "cpu_quick": ("cpu_quick", {}),
    "cpu_auto": ("cpu_auto", {}),
    "blo_sam": ("blo_sam", {}),
    "unet_peer": ("", {}),
}
#: Prediction variants: (presence threshold, refinement passes, largest component); None = the model's own.
VARIANTS: dict[str, tuple[float | None, int | None, bool]] = {
    "plain": (0.0, 0, False),
    "presence": (None, 0, False),
    "refine": (0.0, None, False),
    "default": (None, None, False),
    "lcc": (None, None, True),
}


def training_cases(budget: str, repeat: int, pool: list[str], data: dict[str, tuple[Volume, Volume]]) -> list[Any]:
    if budget.startswith("s"):
        case, _ = painted_case(
            pool[repeat], *data[pool[repeat]], BUDGETS[budget], marked_empty=4 * budget.endswith("e")
        )
        return [case]
    chosen = {"vol1": pool[repeat : repeat + 1], "vol3": pool[repeat : repeat + 3], "vol8": pool[:8]}[budget]
    return [TrainingCase(c, *data[c], structure="left atrium", value=1, fully_labelled=True) for c in chosen]


@torch.no_grad()
def box_masks(model: SamModel, embeddings: torch.Tensor, grid: Any, reference: np.ndarray) -> np.ndarray:
    prompts = boxes_from_label(reference, axis=0)
    out = np.zeros(reference.shape, dtype=bool)
    for s, prompt in prompts.items():
        logits = decode_prompted(model, embeddings[s : s + 1].float(), [prompt], grid.resize.apply_coords)
        out[s] = grid.logits_to_masks(logits)[0]
    return out


@torch.no_grad()
def variant_masks(model: SamModel, embeddings: torch.Tensor, grid: Any, batch: int = 8) -> dict[str, np.ndarray]:
    """Automatic masks of every prediction variant, from one plain pass and one refined pass."""
    model.eval()
    plain, refined, scores = [], [], []
    passes = model.refine_passes
    for start in range(0, embeddings.shape[0], batch):
        first, low_res, score = automatic_passes(model, embeddings[start : start + batch].float(), refine=passes)
        plain.append(first)
        refined.append(low_res)
        scores.append(score.float())
    score = torch.cat(scores)
    logits_of = {0: torch.cat(plain), passes: torch.cat(refined)}
    out: dict[str, np.ndarray] = {}
    for name, (presence, refine, lcc) in VARIANTS.items():
        logits = logits_of[model.refine_passes if refine is None else refine]
        threshold = model.presence_threshold if presence is None else presence
        masks = grid.logits_to_masks(gate_logits(logits, score, threshold) if threshold else logits)
        out[name] = keep_largest_component(masks) if lcc else masks
    if model.refine_passes and model.box_decoder is None:  # lever 5, measured before it is built: smoothed boxes
        context = context_refined(model, embeddings, logits_of[0], score, model.presence_threshold or 0.0)
        out["context"] = grid.logits_to_masks(context)
        out["context_lcc"] = keep_largest_component(out["context"])
    return out


@torch.no_grad()
def context_refined(
    model: SamModel, embeddings: torch.Tensor, plain: torch.Tensor, score: torch.Tensor, gate: float, window: int = 2
) -> torch.Tensor:
    """Refinement with each slice's box replaced by the median box of the present slices within ``window``."""
    masks = (model.upscale_logits(plain)[:, 0] > 0).numpy()
    present = (torch.sigmoid(score) >= gate).numpy() if gate else np.ones(len(masks), dtype=bool)
    boxes = [mask_box(m) if present[z] else None for z, m in enumerate(masks)]
    out = torch.full_like(plain, ABSENT)
    rows = [z for z, b in enumerate(boxes) if b is not None]
    near = [[b for b in boxes[max(0, z - window) : z + window + 1] if b is not None] for z in rows]
    smoothed = [np.median(np.stack(group), axis=0) for group in near]
    for start in range(0, len(rows), 8):
        index = torch.as_tensor(rows[start : start + 8])
        box = torch.as_tensor(np.stack(smoothed[start : start + 8]), dtype=torch.float32)
        logits, _ = model.decode(embeddings.index_select(0, index).float(), boxes=box)
        out[index] = logits.float()
    return out


def slice_counts(masks: np.ndarray, reference: np.ndarray) -> dict[str, int]:
    shown, truth = masks.reshape(masks.shape[0], -1).any(1), reference.reshape(reference.shape[0], -1).any(1)
    return {"foreground_slices": int(shown.sum()), "fp_slices": int((shown & ~truth).sum()),
            "fn_slices": int((~shown & truth).sum())}  # fmt: skip


def scores(variants: dict[str, np.ndarray], reference: np.ndarray, spacing: tuple[float, ...]) -> dict[str, Any]:
    row: dict[str, Any] = {f"{name}_dice": dice(m, reference) for name, m in variants.items()}
    default = variants["default"]
    row["dice"] = row["default_dice"]
    row["nsd"] = normalized_surface_dice(default, reference, spacing=spacing, tolerance_mm=1.0)
    row["lcc_nsd"] = normalized_surface_dice(variants["lcc"], reference, spacing=spacing, tolerance_mm=1.0)
    row.update(slice_counts(default, reference))
    row["plain_fp_slices"] = slice_counts(variants["plain"], reference)["fp_slices"]
    searched = search_slices(list(range(default.shape[0])), SEARCH_STEP, lambda b: [bool(default[s].any()) for s in b])
    kept = np.zeros_like(default)
    kept[searched] = default[searched]
    row["search_dice"], row["search_slices"] = dice(kept, reference), len(searched)
    return row


def main() -> None:
    os.environ["SAMTUNE_EMBEDDING_STORE_MB"] = "0"  # the study keeps its own embedding cache (--cache-dir)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the la_heart_dev folder")
    parser.add_argument("--budgets", nargs="+", default=list(BUDGETS), choices=list(BUDGETS))
    parser.add_argument("--methods", nargs="+", default=["decoder_refine", "unet_peer"])
    parser.add_argument(
        "--define", nargs=2, action="append", default=[], metavar=("NAME", "JSON"),
        help="an extra method for development runs: cpu_quick with these overrides (JSON object)",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3, help="repeats (seeds) per budget; vol8 runs once")
    parser.add_argument("--pool", type=int, default=10, help="training pool: the first POOL volumes")
    parser.add_argument("--test-cases", type=int, default=10, help="held out: the last TEST_CASES volumes")
    parser.add_argument("--runtime", default="auto", help="encoder runtime for all embeddings")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="s4 and vol1, one repeat, cpu_quick, 2 test volumes")
    parser.add_argument(
        "--dev", type=int, default=0, metavar="N",
        help="development split for choosing settings: hold out the last N pool volumes instead of the test volumes "
        "(so no setting is ever chosen on the reported volumes)",
    )  # fmt: skip
    parser.add_argument("--cache-dir", type=Path, help="embedding cache outside the repository")
    parser.add_argument("--json", type=Path, required=True, help="results file (rewritten after every run)")
    parser.add_argument("--resume", action="store_true", help="keep the runs already in --json; add the missing ones")
    args = parser.parse_args()
    for name, overrides in args.define:
        METHODS[name] = ("cpu_quick", json.loads(overrides))
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; known: {sorted(METHODS)}")
    if args.quick:
        args.budgets, args.methods, args.repeats, args.test_cases = ["s4", "vol1"], ["decoder_refine"], 1, 2
    torch.set_num_threads(args.threads)

    ids = case_ids(args.data)
    pool, test_ids = ids[: args.pool], ids[-args.test_cases :]
    if args.dev:
        pool, test_ids = pool[: -args.dev], pool[-args.dev :]
    if set(pool) & set(test_ids):
        parser.error(f"--pool {args.pool} and --test-cases {args.test_cases} overlap in {len(ids)} volumes")
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
        "search_step": SEARCH_STEP,
        "methods": {name: {"preset": p, "overrides": o} for name, (p, o) in METHODS.items()},
        "runs": [],
    }
    if args.resume and args.json.is_file():
        previous = json.loads(args.json.read_text(encoding="utf-8"))
        if previous["test_cases"] != test_ids or previous["pool"] != pool:
            parser.error(f"{args.json} holds another split; --resume needs the same --pool and --test-cases")
        results["runs"] = previous["runs"]
        # the earlier runs' machine stays the section's; this run's machine is recorded with what it added
        results["machine"], results["encoder_s_per_slice"] = previous["machine"], previous.get("encoder_s_per_slice")
        results["resumed"] = [*previous.get("resumed", []), {"machine": machine(args.threads),
                              "methods": args.methods, "budgets": args.budgets}]  # fmt: skip
    done = {(r["method"], r["budget"], r["repeat"]) for r in results["runs"]}

    def save() -> None:
        write_results(args.json, results)

    needed = sorted({c for b in args.budgets for r in range(args.repeats) for c in _volumes(b, r, pool)})
    data: dict[str, tuple[Volume, Volume]] = {c: load_case(args.data, c) for c in set(needed) | set(test_ids)}
    encode_seconds: list[float] = []
    test: dict[str, tuple[torch.Tensor, Any, np.ndarray, tuple[float, ...]]] = {}
    for case_id in [c for c in needed if c not in test_ids] + test_ids:
        image, label = data[case_id]
        cache = args.cache_dir / f"{case_id}-litemedsam-{AXIS}-{runtime.name}.pt" if args.cache_dir else None
        images, embeddings, seconds = encode_volume(image, base, runtime.encode, cache=cache)
        timing = cache.parent / f"{cache.stem}.seconds" if cache is not None else None
        if seconds:
            encode_seconds.append(seconds / images.shape[0])
            if timing is not None:
                timing.write_text(f"{seconds / images.shape[0]}")
        elif timing is not None and timing.is_file():
            encode_seconds.append(float(timing.read_text()))
        memo.add(images, embeddings)
        if case_id in test_ids:
            grid = slice_grid(image, input_size=base.input_size, axis=AXIS)
            test[case_id] = (embeddings, grid, label.array == 1, image.spacing[::-1])
        print(f"embeddings of {case_id}: {seconds:.0f} s (0: from the cache)", flush=True)
    per_slice = statistics.median(encode_seconds) if encode_seconds else 0.0
    if "resumed" in results:
        results["resumed"][-1]["encoder_s_per_slice"] = per_slice
    else:
        results["encoder_s_per_slice"] = per_slice

    def record(name: str, budget: str, repeat: int, per_case: dict[str, Any], **extra: Any) -> None:
        results["runs"].append({"method": name, "budget": budget, "repeat": repeat, "cases": per_case, **extra})
        if "resumed" in results:
            results["resumed"][-1].setdefault("added", []).append(f"{name} {budget} r{repeat}")
        save()
        mean = np.mean([v["dice"] for v in per_case.values()])
        print(f"{name} {budget} r{repeat}: Dice {mean:.3f} {extra.get('train_seconds', 0):.0f} s", flush=True)

    def evaluate(model: SamModel) -> dict[str, Any]:
        return {c: scores(variant_masks(model, e, g), ref, sp) for c, (e, g, ref, sp) in test.items()}

    if ("zero_shot_automatic", "none", 0) not in done:
        record("zero_shot_automatic", "none", 0, evaluate(base), train_seconds=0.0)
    if ("zero_shot_box", "none", 0) not in done:
        boxed = {}
        for case_id, (embeddings, grid, reference, spacing) in test.items():
            masks = box_masks(base, embeddings, grid, reference)
            boxed[case_id] = {
                "dice": dice(masks, reference),
                "nsd": normalized_surface_dice(masks, reference, spacing=spacing),
            }
        record("zero_shot_box", "none", 0, boxed)

    sam_seconds: dict[tuple[str, int], float] = {}  # the peer's budget: the SAM run of the same data
    for run in results["runs"]:
        if run["method"] == "decoder_refine":
            sam_seconds[(run["budget"], run["repeat"])] = run["train_seconds"] + run["encode_seconds"]
    for budget in args.budgets:
        repeats = 1 if budget == "vol8" else args.repeats
        for name in args.methods:
            preset, overrides = METHODS[name]
            for repeat in range(repeats):
                if (name, budget, repeat) in done or (preset == "blo_sam" and budget.startswith("vol")):
                    continue  # blo_sam is the few-slice preset
                cases = training_cases(budget, repeat, pool, data)
                labelled = sum(
                    c.label.shape[0]
                    if c.fully_labelled
                    else int(c.label.array.reshape(c.label.shape[0], -1).any(1).sum())
                    for c in cases
                )
                if name == "unet_peer":
                    _peer(record, cases, budget, repeat, sam_seconds, test, data, labelled)
                    continue
                config = load_preset(preset).train_config(
                    {"device": "cpu", "seed": repeat, "slices": {"axis": AXIS}, "val_fraction": 0.0, **overrides}
                )
                model = build_model("litemedsam", device="cpu")
                model.image_encoder = memo
                seen, misses = memo.hits + memo.misses, memo.misses
                started = time.perf_counter()
                outcome = fine_tune(cases, config, model=model)
                seconds = time.perf_counter() - started
                encoded = memo.hits + memo.misses - seen  # slices the run's embedding cache encoded
                fresh = memo.misses - misses  # of which new (augmented views): their time is in `seconds`
                per_case = evaluate(outcome.model)
                record(
                    name, budget, repeat, per_case,
                    train_seconds=seconds - fresh * per_slice, encode_seconds=encoded * per_slice,
                    epochs=outcome.result.history[-1]["epoch"] if outcome.result.history else config.epochs,
                    labelled_slices=labelled, encoded_slices=encoded, train_slices=outcome.summary["train_slices"],
                    presence_threshold=outcome.model.presence_threshold, refine=outcome.model.refine_passes,
                    train_volumes=[c.case_id for c in cases], val_cases=outcome.summary["val_cases"],
                )  # fmt: skip
                if name == "decoder_refine":
                    sam_seconds[(budget, repeat)] = seconds - fresh * per_slice + encoded * per_slice
    print(json.dumps({"saved": str(args.json)}))


def _volumes(budget: str, repeat: int, pool: list[str]) -> list[str]:
    if budget == "vol8":
        return pool[:8]
    return pool[repeat : repeat + 3] if budget == "vol3" else pool[repeat : repeat + 1]


def _peer(
    record: Any,
    cases: list[Any],
    budget: str,
    repeat: int,
    sam_seconds: dict[tuple[str, int], float],
    test: dict[str, Any],
    data: dict[str, tuple[Volume, Volume]],
    labelled: int,
) -> None:
    """The MONAI 2D U-Net, trained from scratch for the wall time the ``cpu_quick`` run of the same data took."""
    from peer_unet import predict_unet, train_unet

    budget_s = sam_seconds.get((budget, repeat))
    if budget_s is None:
        print(f"unet_peer {budget} r{repeat}: no cpu_quick run to match its time; skipped", flush=True)
        return
    model, info = train_unet(cases, seconds=budget_s, seed=repeat)
    per_case = {}
    for case_id, (_, _, reference, spacing) in test.items():
        masks = predict_unet(model, data[case_id][0], axis=AXIS)
        nsd = normalized_surface_dice(masks, reference, spacing=spacing)
        row = {"dice": dice(masks, reference), "nsd": nsd}
        row.update(slice_counts(masks, reference))
        row["lcc_dice"] = dice(keep_largest_component(masks), reference)
        per_case[case_id] = row
    record("unet_peer", budget, repeat, per_case, train_seconds=info["seconds"], encode_seconds=0.0,
           labelled_slices=labelled, steps=info["steps"], train_volumes=[c.case_id for c in cases])  # fmt: skip


if __name__ == "__main__":
    main()
