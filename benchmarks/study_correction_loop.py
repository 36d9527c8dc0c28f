"""Real-data study: the correction loop on la_heart_dev (left atrium, LGE MRI), simulated.

What a clinician does with SAMTune: paint a few slices, fine-tune, let the model segment the next
volume, correct the slices it got wrong, retrain on old + corrected slices (warm start from the
model's own weights), and go on with the next volume. Simulated here:

* **Round 0**: a model trained on 8 painted slices of the first pool volume (the study's
  ``decoder_refine`` configuration: whole decoder, presence head, box-prompted steps).
* **Round r = 1, 2, 3**: the round r-1 model segments pool volume r automatically; ``--slices``
  slices of it are corrected (they become the reference mask there, or "structure absent" where
  the reference is empty), added to the training data, and the model is retrained from its own
  weights (``fine_tune(parent=...)``, what ``samtune train --from`` and the Slicer module's
  ``retrain`` run) with ``--retrain-steps`` steps.
* **Which slices are corrected** (the arms, each its own chain of models from the same round 0):
  ``worst`` the slices with the most wrong pixels against the reference (the corrections a user
  makes when they fix what is most wrong: the issue's simulation; by per-slice Dice instead, the
  ties at 0 of every false-positive slice pick the volume's first empty slices); ``uncertain``
  the model's most uncertain slices (:mod:`samtune.predict.uncertainty`, what SAM auto's "next
  uncertain slice" shows; no reference used); ``random`` as many random slices (the control of active learning).

Every model is scored on the last ``--test-cases`` volumes, never trained on or corrected, in
automatic mode with its own defaults (presence threshold 0.5 without validation data, one refinement
pass). No setting was chosen on them. Embeddings: each volume is encoded once into the per-user
embedding store (``SAMTUNE_EMBEDDING_STORE`` under ``--cache-dir``), which training reads as the product
does; training time is the fit time (its embeddings came from the store: the volume was segmented
before, as in the loop) plus, for round 0, the encoder time of its volume.

    .venv/bin/python benchmarks/study_correction_loop.py --data ../shared/data/la_heart_dev \\
        --cache-dir ~/.cache/samtune-benchmarks --json benchmarks/results/study_correction_loop.json
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ARMS = ("worst", "uncertain", "random")


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the la_heart_dev folder")
    parser.add_argument("--json", type=Path, required=True, help="results file (rewritten after every model)")
    parser.add_argument("--cache-dir", type=Path, required=True, help="embedding store outside the repository")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--slices", type=int, default=8, help="slices corrected per round")
    parser.add_argument("--painted", type=int, default=8, help="painted slices of the round-0 volume")
    parser.add_argument("--retrain-steps", type=int, default=100)
    parser.add_argument("--test-cases", type=int, default=5, help="held out: the last TEST_CASES volumes")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1],
                        help="seeds; seed s starts the loop at pool volume 4 x s")  # fmt: skip
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args()


def main() -> None:
    args = _arguments()
    os.environ["SAMTUNE_EMBEDDING_STORE"] = str(args.cache_dir.expanduser() / "store")
    os.environ["SAMTUNE_EMBEDDING_STORE_MB"] = "8000"
    import numpy as np
    import torch
    from common import AXIS, case_ids, load_case, machine, painted_case, write_results
    from study_la_heart import DECODER_REFINE

    from samtune.data import Volume
    from samtune.data.pipeline import prepare_slices, slice_grid
    from samtune.data.slicing import SliceConfig
    from samtune.library import load_trained_model
    from samtune.metrics import dice
    from samtune.models import build_model
    from samtune.models.runtime import encoder_runtime, stored_runtime_encoder
    from samtune.predict.decode import automatic_passes, gate_logits
    from samtune.predict.uncertainty import slice_uncertainty
    from samtune.train import TrainingCase, fine_tune, load_preset

    torch.set_num_threads(args.threads)
    ids = case_ids(args.data)
    test_ids = ids[-args.test_cases :]
    loops = {seed: ids[4 * seed : 4 * seed + 1 + args.rounds] for seed in args.seeds}  # start, corrected
    if set(test_ids) & {c for loop in loops.values() for c in loop}:
        sys.exit("the loop's volumes overlap the test volumes")
    base = build_model("litemedsam", device="cpu")
    runtime = encoder_runtime(base, "auto")
    encode = stored_runtime_encoder(base, runtime, True)
    data: dict[str, tuple[Volume, Volume]] = {}
    embedded: dict[str, tuple[torch.Tensor, Any, np.ndarray]] = {}
    per_slice: list[float] = []
    for case_id in dict.fromkeys([*(c for loop in loops.values() for c in loop), *test_ids]):
        image, label = data[case_id] = load_case(args.data, case_id)
        images, _ = prepare_slices(image, input_size=base.input_size, pixel_norm=base.pixel_norm,
                                   config=SliceConfig(AXIS))  # fmt: skip
        began = time.perf_counter()
        with torch.no_grad():
            embeddings = torch.cat([encode(images[s : s + 1]).to(torch.float16) for s in range(images.shape[0])])
        seconds = time.perf_counter() - began
        per_slice.append(seconds / images.shape[0])
        grid = slice_grid(image, input_size=base.input_size, axis=AXIS)
        embedded[case_id] = (embeddings, grid, np.moveaxis(label.array == 1, grid.axis, 0))
        print(f"embeddings of {case_id}: {seconds:.0f} s", flush=True)
    encoder_s = float(np.median(per_slice))  # cold passes are ~0.75-1.3 s per slice; store hits a few ms

    @torch.no_grad()
    def predict(model: Any, case_id: str) -> tuple[np.ndarray, np.ndarray]:
        """Automatic masks ``(N, h, w)`` with the model's defaults, and each slice's uncertainty."""
        embeddings, grid, _ = embedded[case_id]
        masks, scores = [], []
        gate = model.presence_threshold or 0.0
        for s in range(0, embeddings.shape[0], 8):
            first_pass, refined, presence = automatic_passes(
                model, embeddings[s : s + 8].float(), refine=model.refine_passes, gate=gate
            )
            scores.append(slice_uncertainty(first_pass, refined, presence, presence_threshold=gate,
                                            refine=model.refine_passes))  # fmt: skip
            masks.append(grid.logits_to_masks(gate_logits(refined, presence, gate) if gate else refined))
        return np.concatenate(masks), np.concatenate(scores)

    def evaluate(model: Any) -> dict[str, float]:
        return {c: dice(predict(model, c)[0], embedded[c][2]) for c in test_ids}

    def chosen_slices(
        arm: str, masks: np.ndarray, uncertainty: np.ndarray, reference: np.ndarray, rng: Any
    ) -> list[int]:
        if arm == "uncertain":
            return sorted(int(s) for s in np.argsort(-uncertainty, kind="stable")[: args.slices])
        if arm == "random":
            return sorted(int(s) for s in rng.choice(len(masks), size=args.slices, replace=False))
        wrong = np.array([int((m != r).sum()) for m, r in zip(masks, reference)])  # what the user sees to fix
        return sorted(int(s) for s in np.argsort(-wrong, kind="stable")[: args.slices])

    def corrected_case(case_id: str, slices: list[int]) -> TrainingCase:
        image, label = data[case_id]
        sparse = np.zeros_like(label.array)
        axis = embedded[case_id][1].axis
        moved_in, moved_out = np.moveaxis(label.array, axis, 0), np.moveaxis(sparse, axis, 0)
        moved_out[slices] = (moved_in[slices] == 1).astype(sparse.dtype)
        empty = [s for s in slices if not moved_in[s].any()]
        return TrainingCase(f"{case_id}-corrected", image, Volume(sparse, label.geometry), structure="left atrium",
                            value=1, empty_slices=empty)  # fmt: skip

    common = {"device": "cpu", "slices": {"axis": AXIS}, "val_fraction": 0.0}
    results: dict[str, Any] = {
        "machine": machine(args.threads), "backbone": "litemedsam", "encoder_runtime": runtime.name,
        "encoder_s_per_slice": encoder_s, "loops": {str(seed): loop for seed, loop in loops.items()},
        "test_cases": test_ids, "painted_slices": args.painted, "slices_per_round": args.slices,
        "retrain_steps": args.retrain_steps, "seeds": args.seeds, "config": DECODER_REFINE, "rounds": [],
    }  # fmt: skip
    models = Path(tempfile.mkdtemp(prefix="samtune-loop-"))

    def run_loop(seed: int, start: str, *corrected: str, common: dict[str, Any]) -> None:
        """Round 0 on ``start``, then each arm's chain of corrections on ``corrected``."""
        case0, painted = painted_case(start, *data[start], args.painted)
        config0 = load_preset("cpu_quick").train_config({**common, **DECODER_REFINE})
        began = time.perf_counter()
        fine_tune([case0], config0, out_dir=models / f"s{seed}-round0")
        fit0 = time.perf_counter() - began
        model0, _ = load_trained_model(models / f"s{seed}-round0")
        row0 = {"seed": seed, "arm": "all", "round": 0, "test_dice": evaluate(model0),
                "train_seconds": fit0 + 88 * encoder_s, "fit_seconds": fit0,
                "labelled_slices": len(painted)}  # fmt: skip
        results["rounds"].append(row0)
        write_results(args.json, results)
        print(f"seed {seed} round 0: Dice {np.mean(list(row0['test_dice'].values())):.3f} ({fit0:.0f} s)", flush=True)
        retrain = {**DECODER_REFINE, "min_steps": args.retrain_steps, "epochs": 1, "warmup_steps": 5}
        for arm in args.arms:
            rng = np.random.default_rng(seed)
            parent, cases = models / f"s{seed}-round0", [case0]
            for r, case_id in enumerate(corrected, start=1):
                model, _ = load_trained_model(parent)
                masks, uncertainty = predict(model, case_id)
                reference = embedded[case_id][2]
                slices = chosen_slices(arm, masks, uncertainty, reference, rng)
                before = [
                    dice(masks[s], reference[s]) if (masks[s].any() or reference[s].any()) else 1.0 for s in slices
                ]
                cases = [*cases, corrected_case(case_id, slices)]
                config = load_preset("cpu_quick").train_config({**common, **retrain})
                began = time.perf_counter()
                out = models / f"s{seed}-{arm}-round{r}"
                fine_tune(cases, config, parent=parent, out_dir=out)
                fit = time.perf_counter() - began
                retrained, _ = load_trained_model(out)
                row = {"seed": seed, "arm": arm, "round": r, "volume": case_id, "corrected_slices": slices,
                       "corrected_slices_dice_before": before, "volume_dice_before": dice(masks, reference),
                       "test_dice": evaluate(retrained), "train_seconds": fit, "fit_seconds": fit,
                       "labelled_slices": len(painted) + args.slices * r}  # fmt: skip
                results["rounds"].append(row)
                write_results(args.json, results)
                mean = np.mean(list(row["test_dice"].values()))
                print(f"seed {seed} {arm} round {r}: Dice {mean:.3f} ({fit:.0f} s); corrected {slices}", flush=True)
                parent = out

    for seed in args.seeds:
        run_loop(seed, *loops[seed], common={**common, "seed": seed})


if __name__ == "__main__":
    main()
